// The in-process SharedMemory backend: a map, a bounded history of changes, and the watchers.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>

#include <scale/detail/memory_backend.hpp>
#include <scale/shared_memory.hpp>

namespace scale::detail {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

using ChangePtr = std::shared_ptr<const Change>;
using ChangeQueue = SubscriptionQueue<Change>;

// NOTE: one mutex guards the map, the history and the watcher list. It is held only while they
// are updated and while changes are appended to watchers' queues (which keeps every queue in
// revision order); drains are scheduled after it is released, so no handler ever runs under it,
// even when there is no loop and post() runs the drain on the writer's thread.
class InProcessMemory final : public MemoryBackend, public std::enable_shared_from_this<InProcessMemory> {
 public:
  explicit InProcessMemory(InProcessMemoryOptions options) : m_options(options) {}

  Future<Revision> set_many(nlohmann::json object) override {
    Pending pending;
    Revision revision;
    {
      std::lock_guard lock(m_mutex);
      if (object.empty()) return make_ready_future(m_revision);
      revision = ++m_revision;
      auto timestamp = now_ms();
      for (auto& [key, value] : object.items()) {
        auto& slot = m_map[key];
        slot = Stored{value, revision, timestamp};
        record(std::make_shared<const Change>(Change{key, std::move(value), revision, timestamp, false}), pending);
      }
    }
    pending.schedule();
    return make_ready_future(revision);
  }

  Future<std::optional<Entry>> entry(std::string key) override {
    std::lock_guard lock(m_mutex);
    auto found = m_map.find(key);
    if (found == m_map.end()) return make_ready_future(std::optional<Entry>());
    return make_ready_future(std::optional<Entry>(
        Entry{std::move(key), found->second.value, found->second.revision, found->second.timestamp_ms}));
  }

  Future<bool> erase(std::string key) override {
    Pending pending;
    {
      std::lock_guard lock(m_mutex);
      auto found = m_map.find(key);
      if (found == m_map.end()) return make_ready_future(false);
      m_map.erase(found);
      auto revision = ++m_revision;
      record(std::make_shared<const Change>(Change{std::move(key), nullptr, revision, now_ms(), true}), pending);
    }
    pending.schedule();
    return make_ready_future(true);
  }

  Future<bool> compare_and_set(std::string key, Revision expected, nlohmann::json value) override {
    return make_ready_future(set_if(std::move(key), expected, std::move(value)) != 0);
  }

  Future<Revision> compare_and_set_revision(std::string key, Revision expected, nlohmann::json value) override {
    return make_ready_future(set_if(std::move(key), expected, std::move(value)));
  }

  Future<std::int64_t> increment(std::string key, std::int64_t by) override {
    auto result = add(std::move(key), by);
    if (result.error) return make_failed_future<std::int64_t>(std::move(result.error));
    return make_ready_future(result.done.value);
  }

  Future<Incremented> increment_with_revision(std::string key, std::int64_t by) override {
    auto result = add(std::move(key), by);
    if (result.error) return make_failed_future<Incremented>(std::move(result.error));
    return make_ready_future(result.done);
  }

  Future<std::vector<Entry>> list(std::string prefix) override {
    std::vector<Entry> entries;
    std::lock_guard lock(m_mutex);
    for (auto it = m_map.lower_bound(prefix); it != m_map.end() && it->first.starts_with(prefix); ++it)
      entries.push_back(Entry{it->first, it->second.value, it->second.revision, it->second.timestamp_ms});
    return make_ready_future(std::move(entries));
  }

  void watch(std::string prefix, Revision from, std::shared_ptr<ChangeQueue> queue) override {
    bool must_schedule = false;
    std::uint64_t id;
    {
      std::unique_lock lock(m_mutex);
      if (from != 0 && from <= m_compacted_through) {
        auto oldest = m_compacted_through + 1;
        lock.unlock();
        queue->set_error(std::make_exception_ptr(Compacted(from, oldest)));
        return;
      }
      // NOTE: the replay and the registration happen under one lock, so no write falls between them.
      if (from != 0) {
        auto first = std::lower_bound(m_history.begin(), m_history.end(), from,
                                      [](const ChangePtr& change, Revision r) { return change->revision < r; });
        for (auto it = first; it != m_history.end(); ++it)
          if ((*it)->key.starts_with(prefix)) must_schedule = queue->enqueue(*it) || must_schedule;
      }
      id = ++m_next_watcher;
      m_watchers.push_back(Watcher{id, std::move(prefix), queue});
    }
    queue->set_canceller([weak = weak_from_this(), id] {
      if (auto self = weak.lock()) self->unwatch(id);
    });
    queue->set_ready();
    if (must_schedule) queue->schedule();
  }

 private:
  struct Stored {
    nlohmann::json value;
    Revision revision = 0;
    std::int64_t timestamp_ms = 0;
  };
  struct Watcher {
    std::uint64_t id;
    std::string prefix;
    std::shared_ptr<ChangeQueue> queue;
  };
  /// Queues that got their first pending change in this write: their drain is posted after unlock.
  struct Pending {
    std::vector<std::shared_ptr<ChangeQueue>> queues;
    void schedule() {
      for (auto& queue : queues) queue->schedule();
    }
  };

  /// compare_and_set's work: the revision written, or 0 when the key's revision is not `expected`.
  Revision set_if(std::string key, Revision expected, nlohmann::json value) {
    Pending pending;
    Revision revision;
    {
      std::lock_guard lock(m_mutex);
      auto found = m_map.find(key);
      Revision current = found == m_map.end() ? 0 : found->second.revision;
      if (current != expected) return 0;
      revision = ++m_revision;
      auto timestamp = now_ms();
      if (found == m_map.end()) found = m_map.emplace(key, Stored{}).first;
      found->second = Stored{value, revision, timestamp};
      record(std::make_shared<const Change>(Change{std::move(key), std::move(value), revision, timestamp, false}),
             pending);
    }
    pending.schedule();
    return revision;
  }

  struct Added {
    Incremented done;
    std::exception_ptr error;
  };

  /// increment's work: the sum and its revision, or the error.
  Added add(std::string key, std::int64_t by) {
    Pending pending;
    Added result;
    {
      std::lock_guard lock(m_mutex);
      auto found = m_map.find(key);
      std::int64_t current = 0;
      if (found != m_map.end()) {
        const auto& value = found->second.value;
        if (!value.is_number_integer() ||
            (value.is_number_unsigned() && !std::in_range<std::int64_t>(value.get<std::uint64_t>()))) {
          result.error =
              std::make_exception_ptr(TypeMismatch(key, describe_json(value), "a 64-bit integer to increment"));
          return result;
        }
        current = value.get<std::int64_t>();
      }
      std::int64_t sum = 0;
      if (__builtin_add_overflow(current, by, &sum)) {
        result.error = std::make_exception_ptr(
            Error("scale::SharedMemory::increment: key '" + key + "' holds " + std::to_string(current) +
                  " and adding " + std::to_string(by) + " overflows a 64-bit integer"));
        return result;
      }
      auto revision = ++m_revision;
      auto timestamp = now_ms();
      if (found == m_map.end()) found = m_map.emplace(key, Stored{}).first;
      found->second = Stored{sum, revision, timestamp};
      record(std::make_shared<const Change>(Change{std::move(key), sum, revision, timestamp, false}), pending);
      result.done = Incremented{sum, revision};
    }
    pending.schedule();
    return result;
  }

  /// With m_mutex held: keep the change in the history and hand it to every matching watcher.
  void record(ChangePtr change, Pending& pending) {
    for (auto& watcher : m_watchers)
      if (change->key.starts_with(watcher.prefix) && watcher.queue->enqueue(change))
        pending.queues.push_back(watcher.queue);
    m_history.push_back(std::move(change));
    while (m_history.size() > m_options.history) {
      m_compacted_through = m_history.front()->revision;
      m_history.pop_front();
    }
  }

  void unwatch(std::uint64_t id) {
    std::shared_ptr<ChangeQueue> removed;  // released after the lock
    std::lock_guard lock(m_mutex);
    auto found = std::find_if(m_watchers.begin(), m_watchers.end(), [&](const Watcher& w) { return w.id == id; });
    if (found == m_watchers.end()) return;
    removed = std::move(found->queue);
    m_watchers.erase(found);
  }

  const InProcessMemoryOptions m_options;
  std::mutex m_mutex;
  std::map<std::string, Stored, std::less<>> m_map;
  std::deque<ChangePtr> m_history;
  std::vector<Watcher> m_watchers;
  Revision m_revision = 0;
  Revision m_compacted_through = 0;  // the newest revision no longer (fully) in the history
  std::uint64_t m_next_watcher = 0;
};

}  // namespace

// Defaults for backends that cannot report the revision of a conditional write or an increment.
Future<Revision> MemoryBackend::compare_and_set_revision(std::string, Revision, nlohmann::json) {
  return make_failed_future<Revision>(std::make_exception_ptr(
      Error("scale::SharedMemory: this backend does not report the revision of compare_and_set")));
}

Future<Incremented> MemoryBackend::increment_with_revision(std::string, std::int64_t) {
  return make_failed_future<Incremented>(std::make_exception_ptr(
      Error("scale::SharedMemory: this backend does not report the revision of increment")));
}

std::shared_ptr<MemoryBackend> make_in_process_memory(InProcessMemoryOptions options) {
  return std::make_shared<InProcessMemory>(options);
}

}  // namespace scale::detail
