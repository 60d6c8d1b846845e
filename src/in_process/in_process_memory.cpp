// The in-process SharedMemory backend: a map, a bounded history of changes, and the watchers;
// optionally a journal (scale-store's log) that each write's Future waits on.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <deque>
#include <map>
#include <mutex>

#include "in_process/in_process_memory.hpp"
#include <scale/detail/memory_backend.hpp>
#include <scale/shared_memory.hpp>

namespace scale::detail {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

using ChangePtr = std::shared_ptr<const Change>;

/// About what a JSON value holds in memory: its nodes and the bytes of its strings.
std::size_t json_bytes(const nlohmann::json& value) {
  std::size_t bytes = sizeof(nlohmann::json);
  if (value.is_string()) {
    bytes += value.get_ref<const std::string&>().size();
  } else if (value.is_object()) {
    for (const auto& [key, item] : value.items()) bytes += key.size() + 32 + json_bytes(item);  // + the map node
  } else if (value.is_array()) {
    for (const auto& item : value) bytes += json_bytes(item);
  }
  return bytes;
}

/// About what a change kept in the history holds in memory.
std::size_t change_bytes(const Change& change) { return sizeof(Change) + change.key.size() + json_bytes(change.value); }

/// A stored JSON value in 24 bytes: a string of up to 23 bytes inline, anything else as a json.
/// NOTE: short strings are the common small value; inline, they cost no allocation of their own
/// (a json string is a heap std::string plus its heap buffer past 15 bytes), which keeps a
/// million-key store near Redis's memory per key. The tag byte is the last one, after the json's
/// 16 bytes, so the two never overlap.
class CompactValue {
 public:
  CompactValue() {
    new (m_bytes) nlohmann::json();
    m_bytes[tag_at] = json_tag;
  }
  CompactValue(const nlohmann::json& value) { construct(value); }  // NOLINT: stored as given
  CompactValue(const CompactValue& other) { construct_from(other); }
  CompactValue(CompactValue&& other) noexcept { construct_from(std::move(other)); }
  CompactValue& operator=(const CompactValue& other) {
    if (this != &other) {
      CompactValue copy(other);
      *this = std::move(copy);
    }
    return *this;
  }
  CompactValue& operator=(CompactValue&& other) noexcept {
    if (this != &other) {
      destroy();
      construct_from(std::move(other));
    }
    return *this;
  }
  ~CompactValue() { destroy(); }

  /// The value as JSON (a copy).
  nlohmann::json get() const {
    if (is_json()) return as_json();
    return nlohmann::json(std::string(reinterpret_cast<const char*>(m_bytes), m_bytes[tag_at]));
  }

 private:
  static constexpr std::size_t tag_at = 23;
  static constexpr unsigned char json_tag = 0xff;
  static constexpr std::size_t max_inline = tag_at;
  static_assert(sizeof(nlohmann::json) <= tag_at && alignof(nlohmann::json) <= 8);

  bool is_json() const noexcept { return m_bytes[tag_at] == json_tag; }
  const nlohmann::json& as_json() const noexcept {
    return *std::launder(reinterpret_cast<const nlohmann::json*>(m_bytes));
  }
  void destroy() noexcept {
    if (is_json()) std::launder(reinterpret_cast<nlohmann::json*>(m_bytes))->~basic_json();
  }
  void construct(const nlohmann::json& value) {
    if (value.is_string()) {
      const auto& text = value.get_ref<const std::string&>();
      if (text.size() <= max_inline) {
        std::memcpy(m_bytes, text.data(), text.size());
        m_bytes[tag_at] = static_cast<unsigned char>(text.size());
        return;
      }
    }
    new (m_bytes) nlohmann::json(value);
    m_bytes[tag_at] = json_tag;
  }
  void construct_from(const CompactValue& other) {
    if (other.is_json()) {
      new (m_bytes) nlohmann::json(other.as_json());
      m_bytes[tag_at] = json_tag;
    } else {
      std::memcpy(m_bytes, other.m_bytes, sizeof m_bytes);
    }
  }
  void construct_from(CompactValue&& other) noexcept {
    if (other.is_json()) {
      new (m_bytes) nlohmann::json(std::move(*std::launder(reinterpret_cast<nlohmann::json*>(other.m_bytes))));
      m_bytes[tag_at] = json_tag;
    } else {
      std::memcpy(m_bytes, other.m_bytes, sizeof m_bytes);
    }
  }

  alignas(8) unsigned char m_bytes[24];
};
using ChangeQueue = SubscriptionQueue<Change>;

/// Completes a journaled write's Future with its result once the journal reports it durable.
template <class T>
class ValueWaiter final : public JournalWaiter {
 public:
  explicit ValueWaiter(T value) : m_value(std::move(value)) {}
  Future<T> future() { return m_promise.get_future(); }
  void done(std::exception_ptr error) noexcept override {
    if (error)
      m_promise.set_exception(std::move(error));
    else
      m_promise.set_value(std::move(m_value));
  }

 private:
  Promise<T> m_promise;
  T m_value;
};

// NOTE: one mutex guards the map, the history and the watcher list. It is held only while they
// are updated and while changes are appended to watchers' queues (which keeps every queue in
// revision order); drains are scheduled after it is released, so no handler ever runs under it,
// even when there is no loop and post() runs the drain on the writer's thread.
class InProcessMemory final : public PagedMemory, public std::enable_shared_from_this<InProcessMemory> {
 public:
  explicit InProcessMemory(InProcessMemoryOptions options) : m_options(std::move(options)) {}

  InProcessMemory(InProcessMemoryOptions options, RecoveredMemory state) : m_options(std::move(options)) {
    for (auto& entry : state.entries)
      m_map.emplace_hint(m_map.end(), std::move(entry.key),
                         Stored{std::move(entry.value), entry.revision, entry.timestamp_ms});
    m_revision = state.revision;
    m_compacted_through = state.compacted_through;
    for (auto& change : state.history) remember(std::make_shared<const Change>(std::move(change)));
  }

  Future<Revision> set_many(nlohmann::json object) override {
    Pending pending;
    Revision revision;
    Future<Revision> durable;
    {
      std::lock_guard lock(m_mutex);
      if (object.empty()) return make_ready_future(m_revision);
      revision = ++m_revision;
      auto timestamp = now_ms();
      std::vector<ChangePtr> journaled;  // stays empty (no allocation) without a journal
      if (m_options.journal) journaled.reserve(object.size());
      for (auto& [key, value] : object.items()) {
        auto& slot = m_map[key];
        slot = Stored{value, revision, timestamp};
        auto change = std::make_shared<const Change>(Change{key, std::move(value), revision, timestamp, false});
        if (m_options.journal) journaled.push_back(change);
        record(std::move(change), pending);
      }
      if (m_options.journal) durable = journal(revision, timestamp, journaled, revision);
    }
    pending.schedule();
    return m_options.journal ? std::move(durable) : make_ready_future(revision);
  }

  Future<std::optional<Entry>> entry(std::string key) override {
    std::lock_guard lock(m_mutex);
    auto found = m_map.find(key);
    if (found == m_map.end()) return make_ready_future(std::optional<Entry>());
    return make_ready_future(std::optional<Entry>(
        Entry{std::move(key), found->second.value.get(), found->second.revision, found->second.timestamp_ms}));
  }

  Future<bool> erase(std::string key) override {
    Pending pending;
    Future<bool> durable;
    {
      std::lock_guard lock(m_mutex);
      auto found = m_map.find(key);
      if (found == m_map.end()) return make_ready_future(false);
      m_map.erase(found);
      auto revision = ++m_revision;
      auto change = std::make_shared<const Change>(Change{std::move(key), nullptr, revision, now_ms(), true});
      if (m_options.journal) durable = journal(revision, change->timestamp_ms, std::span(&change, 1), true);
      record(std::move(change), pending);
    }
    pending.schedule();
    return m_options.journal ? std::move(durable) : make_ready_future(true);
  }

  Future<Revision> erase_revision(std::string key, Revision expected) override {
    Pending pending;
    Revision revision;
    Future<Revision> durable;
    {
      std::lock_guard lock(m_mutex);
      auto found = m_map.find(key);
      if (found == m_map.end() || found->second.revision != expected) return make_ready_future(Revision{0});
      m_map.erase(found);
      revision = ++m_revision;
      auto change = std::make_shared<const Change>(Change{std::move(key), nullptr, revision, now_ms(), true});
      if (m_options.journal) durable = journal(revision, change->timestamp_ms, std::span(&change, 1), revision);
      record(std::move(change), pending);
    }
    pending.schedule();
    return m_options.journal ? std::move(durable) : make_ready_future(revision);
  }

  Future<Revision> compare_and_set_revision(std::string key, Revision expected, nlohmann::json value) override {
    Pending pending;
    Revision revision;
    Future<Revision> durable;
    {
      std::lock_guard lock(m_mutex);
      auto found = m_map.find(key);
      Revision current = found == m_map.end() ? 0 : found->second.revision;
      if (current != expected) return make_ready_future(Revision{0});
      revision = ++m_revision;
      auto timestamp = now_ms();
      if (found == m_map.end()) found = m_map.emplace(key, Stored{}).first;
      found->second = Stored{value, revision, timestamp};
      auto change = std::make_shared<const Change>(
          Change{std::move(key), std::move(value), revision, timestamp, false});
      if (m_options.journal) durable = journal(revision, timestamp, std::span(&change, 1), revision);
      record(std::move(change), pending);
    }
    pending.schedule();
    return m_options.journal ? std::move(durable) : make_ready_future(revision);
  }

  Future<Incremented> increment_with_revision(std::string key, std::int64_t by) override {
    Pending pending;
    Incremented done;
    Future<Incremented> durable;
    {
      std::lock_guard lock(m_mutex);
      auto found = m_map.find(key);
      std::int64_t current = 0;
      if (found != m_map.end()) {
        const auto value = found->second.value.get();
        if (!value.is_number_integer() ||
            (value.is_number_unsigned() && !std::in_range<std::int64_t>(value.get<std::uint64_t>())))
          return make_failed_future<Incremented>(
              std::make_exception_ptr(TypeMismatch(key, describe_json(value), "a 64-bit integer to increment")));
        current = value.get<std::int64_t>();
      }
      std::int64_t sum = 0;
      if (__builtin_add_overflow(current, by, &sum))
        return make_failed_future<Incremented>(std::make_exception_ptr(
            Error("scale::SharedMemory::increment: key '" + key + "' holds " + std::to_string(current) +
                  " and adding " + std::to_string(by) + " overflows a 64-bit integer")));
      auto revision = ++m_revision;
      auto timestamp = now_ms();
      if (found == m_map.end()) found = m_map.emplace(key, Stored{}).first;
      found->second = Stored{nlohmann::json(sum), revision, timestamp};
      done = Incremented{sum, revision};
      auto change = std::make_shared<const Change>(Change{std::move(key), sum, revision, timestamp, false});
      if (m_options.journal) durable = journal(revision, timestamp, std::span(&change, 1), done);
      record(std::move(change), pending);
    }
    pending.schedule();
    return m_options.journal ? std::move(durable) : make_ready_future(done);
  }

  Future<std::vector<Entry>> list(std::string prefix) override {
    std::vector<Entry> entries;
    std::lock_guard lock(m_mutex);
    for (auto it = m_map.lower_bound(prefix); it != m_map.end() && it->first.starts_with(prefix); ++it)
      entries.push_back(Entry{it->first, it->second.value.get(), it->second.revision, it->second.timestamp_ms});
    return make_ready_future(std::move(entries));
  }

  ListPage list_page(const std::string& prefix, const std::string& after, std::size_t limit,
                     std::size_t max_bytes) override {
    ListPage page;
    std::size_t bytes = 0;
    std::lock_guard lock(m_mutex);
    auto it = after.empty() || after < prefix ? m_map.lower_bound(prefix) : m_map.upper_bound(after);
    for (; it != m_map.end() && it->first.starts_with(prefix); ++it) {
      if (page.entries.size() >= limit || (!page.entries.empty() && bytes >= max_bytes)) {
        page.more = true;
        break;
      }
      page.entries.push_back(Entry{it->first, it->second.value.get(), it->second.revision, it->second.timestamp_ms});
      bytes += it->first.size() + json_bytes(page.entries.back().value);
    }
    return page;
  }

  MemoryCounts counts() override {
    std::lock_guard lock(m_mutex);
    return MemoryCounts{m_map.size(), m_revision};
  }

  HistoryPage history_page(const std::string& prefix, Revision from, std::size_t max_bytes) override {
    // NOTE: a page also ends after `scan_limit` changes of other keys, so that a prefix that
    // matches little never holds the lock over the whole history.
    constexpr std::size_t scan_limit = 16 * 1024;
    HistoryPage page;
    page.next = from;
    std::unique_lock lock(m_mutex);
    if (from <= m_compacted_through) {
      auto oldest = m_compacted_through + 1;
      lock.unlock();
      throw Compacted(from, oldest);
    }
    auto it = std::lower_bound(m_history.begin(), m_history.end(), from,
                               [](const Kept& kept, Revision r) { return kept.change->revision < r; });
    std::size_t bytes = 0;
    std::size_t scanned = 0;
    for (; it != m_history.end(); ++it, ++scanned) {
      const Revision revision = it->change->revision;
      if ((bytes >= max_bytes || scanned >= scan_limit) && revision != page.next - 1) break;  // whole revisions only
      if (it->change->key.starts_with(prefix)) {
        page.changes.push_back(it->change);
        bytes += it->bytes;
      }
      page.next = revision + 1;
    }
    page.more = it != m_history.end();
    return page;
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
                                      [](const Kept& kept, Revision r) { return kept.change->revision < r; });
        for (auto it = first; it != m_history.end(); ++it)
          if (it->change->key.starts_with(prefix)) must_schedule = queue->enqueue(it->change) || must_schedule;
      }
      id = ++m_next_watcher;
      // A `from` not yet written holds back the changes before it; 0 takes every later change.
      m_watchers.push_back(Watcher{id, std::move(prefix), from, queue});
    }
    queue->set_canceller([weak = weak_from_this(), id] {
      if (auto self = weak.lock()) self->unwatch(id);
    });
    queue->set_ready();
    if (must_schedule) queue->schedule();
  }

 private:
  struct Stored {
    CompactValue value;
    Revision revision = 0;
    std::int64_t timestamp_ms = 0;
  };
  /// A change in the history and what it counts against InProcessMemoryOptions::history_bytes.
  struct Kept {
    ChangePtr change;
    std::size_t bytes = 0;
  };
  struct Watcher {
    std::uint64_t id;
    std::string prefix;
    Revision from = 0;  // deliver only changes with a revision >= from
    std::shared_ptr<ChangeQueue> queue;
  };
  /// Queues that got their first pending change in this write: their drain is posted after unlock.
  struct Pending {
    std::vector<std::shared_ptr<ChangeQueue>> queues;
    void schedule() {
      for (auto& queue : queues) queue->schedule();
    }
  };

  /// With m_mutex held, after the write is applied: hands it to the journal and returns the
  /// Future that completes with `result` once the journal has made it durable.
  template <class T>
  Future<T> journal(Revision revision, std::int64_t timestamp, std::span<const ChangePtr> changes, T result) {
    auto waiter = std::make_unique<ValueWaiter<T>>(std::move(result));
    auto durable = waiter->future();
    if (m_options.journal->append(revision, timestamp, changes, std::move(waiter))) {
      std::vector<Entry> entries;
      entries.reserve(m_map.size());
      for (const auto& [key, stored] : m_map)
        entries.push_back(Entry{key, stored.value.get(), stored.revision, stored.timestamp_ms});
      m_options.journal->snapshot(revision, std::move(entries));
    }
    return durable;
  }

  /// With m_mutex held: keep the change in the history and hand it to every matching watcher.
  void record(ChangePtr change, Pending& pending) {
    for (auto& watcher : m_watchers)
      if (change->revision >= watcher.from && change->key.starts_with(watcher.prefix) && watcher.queue->enqueue(change))
        pending.queues.push_back(watcher.queue);
    remember(std::move(change));
  }

  /// With m_mutex held: keep the change in the history, bounded by count and by bytes.
  void remember(ChangePtr change) {
    const std::size_t bytes = change_bytes(*change);
    m_history.push_back(Kept{std::move(change), bytes});
    m_history_bytes += bytes;
    while (!m_history.empty() && (m_history.size() > m_options.history || m_history_bytes > m_options.history_bytes)) {
      m_compacted_through = m_history.front().change->revision;
      m_history_bytes -= m_history.front().bytes;
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
  std::deque<Kept> m_history;
  std::size_t m_history_bytes = 0;  // the sum of m_history's Kept::bytes
  std::vector<Watcher> m_watchers;
  Revision m_revision = 0;
  Revision m_compacted_through = 0;  // the newest revision no longer (fully) in the history
  std::uint64_t m_next_watcher = 0;
};

}  // namespace

std::shared_ptr<MemoryBackend> make_in_process_memory(InProcessMemoryOptions options) {
  return std::make_shared<InProcessMemory>(std::move(options));
}

std::shared_ptr<MemoryBackend> make_in_process_memory(InProcessMemoryOptions options, RecoveredMemory state) {
  return std::make_shared<InProcessMemory>(std::move(options), std::move(state));
}

}  // namespace scale::detail
