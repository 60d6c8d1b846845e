#pragma once
// The one interface every SharedMemory backend implements (in-process, http://, redis://, and a
// child's link to its parent). SharedMemory's typed calls (get<T>, set(key, value)) are written
// once on top of it.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <scale/detail/subscription_state.hpp>
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
  /// Writes `value` when the key's revision equals `expected` (0: only when absent); true when
  /// written. A failed comparison uses no revision.
  virtual Future<bool> compare_and_set(std::string key, Revision expected, nlohmann::json value) = 0;
  /// Adds `by` to the key's integer value (a missing key counts from 0) and returns the sum; a
  /// value that is not an integer fails with scale::TypeMismatch.
  virtual Future<std::int64_t> increment(std::string key, std::int64_t by) = 0;
  /// Like compare_and_set, but answers the revision written (0 when the comparison failed), which
  /// the store server returns to its clients. Backends that cannot tell fail with scale::Error.
  virtual Future<Revision> compare_and_set_revision(std::string key, Revision expected, nlohmann::json value);
  /// Like increment, also answering the revision of the write. Backends that cannot tell fail
  /// with scale::Error.
  virtual Future<Incremented> increment_with_revision(std::string key, std::int64_t by);
  /// Every entry whose key starts with `prefix`, sorted by key.
  virtual Future<std::vector<Entry>> list(std::string prefix) = 0;
  /// Delivers every change to keys starting with `prefix` whose revision is >= `from_revision`
  /// (0: changes after this call) to `queue`, in revision order, none missed or repeated.
  /// The backend must: enqueue changes in order (see SubscriptionQueue::enqueue), call
  /// queue->set_ready() once it delivers (or set_error(), e.g. scale::Compacted, and then never
  /// deliver), and give queue->set_canceller() what unregisters it. Never calls the handler itself.
  virtual void watch(std::string prefix, Revision from_revision,
                     std::shared_ptr<SubscriptionQueue<Change>> queue) = 0;
};

/// Options of the in-process backend (SharedMemory::Options is this type).
struct InProcessMemoryOptions {
  /// How many of the latest changes are kept for watches that start in the past.
  std::size_t history = 10'000;
};

/// The in-process backend (src/in_process_memory.cpp).
std::shared_ptr<MemoryBackend> make_in_process_memory(InProcessMemoryOptions options);

}  // namespace detail
}  // namespace scale
