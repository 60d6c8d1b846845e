#pragma once
// The one interface every SharedMemory backend implements (in-process, http://, redis://, and a
// child's link to its parent). SharedMemory's typed calls (get<T>, set(key, value)) are written
// once on top of it.

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <scale/detail/subscription_state.hpp>
#include <scale/error.hpp>
#include <scale/future.hpp>

namespace scale {

/// A store-wide revision: every write gets the next one; 0 means "none" / "absent".
using Revision = std::int64_t;

/// A key's current value with the revision and time (ms since the epoch) of its last write.
struct Entry {
  std::string key;
  nlohmann::json value;
  Revision revision = 0;
  std::int64_t timestamp_ms = 0;
};

/// One write to one key as a watch sees it; `erased` is true for an erase (then `value` is null).
struct Change {
  std::string key;
  nlohmann::json value;
  Revision revision = 0;
  std::int64_t timestamp_ms = 0;
  bool erased = false;
};

namespace detail {

/// What increment_with_revision() answers: the sum and the revision of the write.
struct Incremented {
  std::int64_t value = 0;
  Revision revision = 0;
};

/// A SharedMemory backend. Every member may be called from any thread at the same time; the
/// Futures may complete on any thread (SharedMemory's callers resume on the loop regardless).
class MemoryBackend {
 public:
  virtual ~MemoryBackend() = default;

  /// Writes every key of `object` (a JSON object, checked by the caller) in one atomic step with
  /// one new revision, which it returns. An empty object writes nothing and returns the current
  /// revision.
  virtual Future<Revision> set_many(nlohmann::json object) = 0;
  /// The key's entry, or nullopt when absent.
  virtual Future<std::optional<Entry>> entry(std::string key) = 0;
  /// Removes the key; true when it was there (only then is a revision used).
  virtual Future<bool> erase(std::string key) = 0;
  /// Writes `value` when the key's revision equals `expected` (0: only when absent); answers the
  /// revision written, or 0 when the comparison failed (which uses no revision). SharedMemory's
  /// compare_and_set answers whether it is not 0; the store server returns it to its clients.
  virtual Future<Revision> compare_and_set_revision(std::string key, Revision expected, nlohmann::json value) = 0;
  /// Adds `by` to the key's integer value (a missing key counts from 0); answers the sum and the
  /// revision of the write. A value that is not an integer fails with scale::TypeMismatch.
  /// SharedMemory's increment answers the sum.
  virtual Future<Incremented> increment_with_revision(std::string key, std::int64_t by) = 0;
  /// Every entry whose key starts with `prefix`, sorted by key.
  virtual Future<std::vector<Entry>> list(std::string prefix) = 0;
  /// Delivers every change to keys starting with `prefix` whose revision is >= `from_revision`
  /// (0: changes after this call) to `queue`, in revision order, none missed or repeated.
  /// The backend must: enqueue changes in order (see SubscriptionQueue::enqueue), call
  /// queue->set_ready() once it delivers (or set_error(), e.g. scale::Compacted, and then never
  /// deliver), and give queue->set_canceller() what unregisters it. Never calls the handler itself.
  virtual void watch(std::string prefix, Revision from_revision, std::shared_ptr<SubscriptionQueue<Change>> queue) = 0;
};

/// What a journaled write waits on: the journal calls done() once, from its own thread, with
/// nullptr when the write is durable or with the error that kept it from being so.
class JournalWaiter {
 public:
  virtual ~JournalWaiter() = default;
  virtual void done(std::exception_ptr error) noexcept = 0;
};

/// Where the in-process backend records its writes to make them durable (scale-store's log,
/// src/store/store_log.cpp). Both members are called with the backend's lock held, so they must be
/// quick and must never call back into the backend.
// NOTE: the waiters complete on a thread of the journal's choosing (scale-store's: the I/O thread
// that made the write). With no Runtime loop running, a Future's continuation resumes right there,
// so it must not block waiting for another journaled write.
class MemoryJournal {
 public:
  virtual ~MemoryJournal() = default;
  /// One write: its revision, time and changes (several for set_many, all of one revision), in
  /// revision order. `waiter` is completed once the write is durable; never inside this call.
  /// Returns true when the journal wants a snapshot: the backend then calls snapshot() with the
  /// state as of this write, still under its lock.
  virtual bool append(Revision revision, std::int64_t timestamp_ms,
                      std::span<const std::shared_ptr<const Change>> changes,
                      std::unique_ptr<JournalWaiter> waiter) = 0;
  /// Every entry (sorted by key) and the revision they are the state of.
  virtual void snapshot(Revision revision, std::vector<Entry> entries) = 0;
};

/// Options of the in-process backend (SharedMemory::Options is this type).
struct InProcessMemoryOptions {
  /// How many of the latest changes are kept for watches that start in the past.
  std::size_t history = 10'000;
  /// The most those changes may hold, in bytes of keys and values (an estimate of their memory);
  /// older changes are dropped first, as past `history`.
  std::size_t history_bytes = 64 * 1024 * 1024;
  /// When set, every write is handed to it under the backend's lock (so in revision order) and
  /// its Future completes only once the journal reports it durable. Readers and watchers see a
  /// write as soon as it is made, which may be a moment before it is acknowledged.
  std::shared_ptr<MemoryJournal> journal{};
};

/// State recovered from a journal, to start a backend from.
struct RecoveredMemory {
  /// Every entry, sorted by key.
  std::vector<Entry> entries;
  /// The store's revision (the last write's; it may be above every entry's after erases).
  Revision revision = 0;
  /// The latest recovered changes, in revision order, for watches that start in the past.
  std::vector<Change> history;
  /// The newest revision whose changes are not (all) in `history`: a watch from it or before
  /// gets scale::Compacted.
  Revision compacted_through = 0;
};

/// The in-process backend (src/in_process/in_process_memory.cpp).
std::shared_ptr<MemoryBackend> make_in_process_memory(InProcessMemoryOptions options);
/// The in-process backend starting from recovered state.
std::shared_ptr<MemoryBackend> make_in_process_memory(InProcessMemoryOptions options, RecoveredMemory state);

}  // namespace detail
}  // namespace scale
