// SharedMemory("redis://..."): the key/value state in one Redis hash, revisions from one counter,
// and every change in one Redis Stream whose entry IDs follow the revisions. Each write runs as
// one Lua script, so a value, its revision, its timestamp and its change record land together.
// docs/redis.md describes the key layout, the scripts and the guarantees.

#include <scale/detail/memory_backend.hpp>
#include "core/promise_callback.hpp"
#include "redis/redis_client.hpp"
#include <scale/shared_memory.hpp>

#include <algorithm>
#include <charconv>
#include <mutex>

namespace scale::detail {
namespace {

// Every script gets the same four keys (all under the store's hash tag):
//   KEYS[1] revision counter, KEYS[2] hash key -> "<revision>:<timestamp_ms>:<json>",
//   KEYS[3] change stream, KEYS[4] scratch string for exact 64-bit arithmetic in increment.
// ARGV[1] is the stream's MAXLEN (trimmed with ~, so at least that many changes are kept).
constexpr const char* prelude = R"lua(
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end
local function write(key, json, rev, ts, index)
  redis.call('HSET', KEYS[2], key, rev .. ':' .. ts .. ':' .. json)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], rev .. '-' .. index, 'k', key, 't', ts, 'v', json)
end
)lua";

// ARGV[2..]: key, json, key, json, ...; one revision for all, stream IDs <rev>-0, <rev>-1, ...
const RedisScript& set_script() {
  static const RedisScript script(std::string(prelude) + R"lua(
local rev = redis.call('INCR', KEYS[1])
local ts = now_ms()
local n = 0
for i = 2, #ARGV, 2 do
  write(ARGV[i], ARGV[i + 1], rev, ts, n)
  n = n + 1
end
return rev
)lua");
  return script;
}

// ARGV[2]: key. Answers the revision of the erase, or 0 when the key was absent.
const RedisScript& erase_script() {
  static const RedisScript script(std::string(prelude) + R"lua(
if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return 0 end
local rev = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], rev .. '-0', 'k', ARGV[2], 't', now_ms(), 'd', '1')
return rev
)lua");
  return script;
}

// ARGV[2]: key, ARGV[3]: expected revision (0: absent), ARGV[4]: json. Answers the revision
// written, or 0 when the comparison failed.
const RedisScript& cas_script() {
  static const RedisScript script(std::string(prelude) + R"lua(
local current = redis.call('HGET', KEYS[2], ARGV[2])
local revision = '0'
if current then revision = string.match(current, '^(%d+):') end
if revision ~= ARGV[3] then return 0 end
local rev = redis.call('INCR', KEYS[1])
write(ARGV[2], ARGV[4], rev, now_ms(), 0)
return rev
)lua");
  return script;
}

// ARGV[2]: key, ARGV[3]: the amount. Redis's INCRBY on a scratch key does the exact 64-bit sum
// (Lua numbers are doubles). Answers {'ok', sum, rev}, {'type', json} or {'overflow', json}.
const RedisScript& increment_script() {
  static const RedisScript script(std::string(prelude) + R"lua(
local current = redis.call('HGET', KEYS[2], ARGV[2])
local value = '0'
if current then
  value = string.match(current, '^%d+:%d+:(.*)$')
  if not string.match(value, '^%-?%d+$') then return {'type', value} end
end
redis.call('SET', KEYS[4], value)
local added = redis.pcall('INCRBY', KEYS[4], ARGV[3])
local sum = redis.call('GET', KEYS[4])
redis.call('DEL', KEYS[4])
if type(added) == 'table' and added.err then
  if string.find(added.err, 'overflow') then return {'overflow', value} end
  return {'type', value}
end
local rev = redis.call('INCR', KEYS[1])
write(ARGV[2], sum, rev, now_ms(), 0)
return {'ok', sum, rev}
)lua");
  return script;
}

// ARGV[2]: prefix. Answers key, stored, key, stored, ... for the keys under the prefix.
const RedisScript& list_script() {
  static const RedisScript script(R"lua(
local all = redis.call('HGETALL', KEYS[2])
local out = {}
local prefix = ARGV[2]
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #prefix) == prefix then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
)lua");
  return script;
}

using ChangePtr = std::shared_ptr<const Change>;
using ChangeQueue = SubscriptionQueue<Change>;

std::int64_t to_int(std::string_view text, const char* what) {
  std::int64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size())
    throw Error(std::string("scale: unexpected ") + what + " from Redis: '" + std::string(text) + "'");
  return value;
}

/// A stream entry ID, <revision>-<index of the key within the write>.
struct StreamId {
  Revision revision = 0;
  std::int64_t index = 0;
  static StreamId parse(std::string_view text) {
    auto dash = text.find('-');
    if (dash == std::string_view::npos) throw Error("scale: unexpected stream ID from Redis: " + std::string(text));
    return {to_int(text.substr(0, dash), "stream ID"), to_int(text.substr(dash + 1), "stream ID")};
  }
  std::string text() const { return std::to_string(revision) + "-" + std::to_string(index); }
  /// Revisions are dense and the keys of one write are numbered from 0, so the next entry is
  /// either the next key of the same write or the first of the next revision.
  bool follows(const StreamId& previous) const {
    return (revision == previous.revision && index == previous.index + 1) ||
           (revision == previous.revision + 1 && index == 0);
  }
  auto operator<=>(const StreamId&) const = default;
};

/// "<revision>:<timestamp>:<json>" as stored in the hash.
Entry decode_entry(std::string key, const std::string& stored) {
  auto first = stored.find(':');
  auto second = first == std::string::npos ? std::string::npos : stored.find(':', first + 1);
  if (second == std::string::npos) throw Error("scale: unexpected value in the Redis store for key '" + key + "'");
  Entry entry;
  entry.revision = to_int(std::string_view(stored).substr(0, first), "revision");
  entry.timestamp_ms = to_int(std::string_view(stored).substr(first + 1, second - first - 1), "timestamp");
  entry.value = nlohmann::json::parse(stored.begin() + static_cast<std::ptrdiff_t>(second) + 1, stored.end());
  entry.key = std::move(key);
  return entry;
}

/// One stream entry: [id, [field, value, ...]].
std::pair<StreamId, ChangePtr> decode_change(const RedisReply& item) {
  if (item.elements.size() != 2) throw Error("scale: unexpected stream entry from Redis");
  auto id = StreamId::parse(item.elements[0].str);
  Change change;
  change.revision = id.revision;
  const auto& fields = item.elements[1].elements;
  for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
    const auto& name = fields[i].str;
    const auto& value = fields[i + 1].str;
    if (name == "k")
      change.key = value;
    else if (name == "t")
      change.timestamp_ms = to_int(value, "timestamp");
    else if (name == "v")
      change.value = nlohmann::json::parse(value);
    else if (name == "d")
      change.erased = true;
  }
  return {id, std::make_shared<const Change>(std::move(change))};
}

class RedisMemory final : public MemoryBackend, public std::enable_shared_from_this<RedisMemory> {
 public:
  RedisMemory(RedisUrl url, std::string tag, std::size_t history)
      : m_client(std::make_unique<RedisClient>(std::move(url))),
        m_keys{tag + ":revision", tag + ":data", tag + ":changes", tag + ":scratch"},
        m_history(std::to_string(history)) {}

  ~RedisMemory() override {
    m_client->stop();  // joins the I/O thread first: no callback runs on a half-destroyed backend
  }

  Future<Revision> set_many(nlohmann::json object) override {
    if (object.empty()) {
      return call<Revision>("GET", {"GET", m_keys[0]}, [](const RedisReply& reply) -> Revision {
        return reply.is_nil() ? 0 : to_int(reply.str, "revision");
      });
    }
    std::vector<std::string> args{m_history};
    try {
      for (auto& [key, value] : object.items()) {
        args.push_back(key);
        args.push_back(value.dump());
      }
    } catch (...) {
      return make_failed_future<Revision>(std::current_exception());
    }
    return script<Revision>(set_script(), std::move(args), [](const RedisReply& reply) { return reply.integer; });
  }

  Future<std::optional<Entry>> entry(std::string key) override {
    return call<std::optional<Entry>>("HGET", {"HGET", m_keys[1], key}, [key](const RedisReply& reply) {
      if (reply.is_nil()) return std::optional<Entry>();
      return std::optional<Entry>(decode_entry(key, reply.str));
    });
  }

  Future<bool> erase(std::string key) override {
    return script<bool>(erase_script(), {m_history, std::move(key)},
                        [](const RedisReply& reply) { return reply.integer != 0; });
  }

  Future<Revision> compare_and_set_revision(std::string key, Revision expected, nlohmann::json value) override {
    std::string json;
    try {
      json = value.dump();
    } catch (...) {
      return make_failed_future<Revision>(std::current_exception());
    }
    return script<Revision>(cas_script(), {m_history, std::move(key), std::to_string(expected), std::move(json)},
                            [](const RedisReply& reply) { return reply.integer; });
  }

  Future<Incremented> increment_with_revision(std::string key, std::int64_t by) override {
    return script<Incremented>(increment_script(), {m_history, key, std::to_string(by)},
                               [key, by](const RedisReply& reply) { return incremented(key, by, reply); });
  }

  Future<std::vector<Entry>> list(std::string prefix) override {
    return script<std::vector<Entry>>(list_script(), {m_history, std::move(prefix)}, [](const RedisReply& reply) {
      std::vector<Entry> entries;
      for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2)
        entries.push_back(decode_entry(reply.elements[i].str, reply.elements[i + 1].str));
      std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.key < b.key; });
      return entries;
    });
  }

  void watch(std::string prefix, Revision from, std::shared_ptr<ChangeQueue> queue) override {
    auto watcher = std::make_shared<Watcher>();
    watcher->prefix = std::move(prefix);
    watcher->from = from;
    watcher->queue = queue;
    bool start_tail = false;
    bool begin_now = false;
    {
      std::lock_guard lock(m_watch_mutex);
      watcher->id = ++m_next_watcher;
      m_watchers.push_back(watcher);
      if (!m_tail_started) start_tail = m_tail_started = true;
      if (m_tail_known) {
        watcher->replay_to = m_position;
        begin_now = true;
      }
    }
    queue->set_canceller([weak = weak_from_this(), id = watcher->id] {
      if (auto self = weak.lock()) self->unwatch(id);
    });
    if (start_tail) m_client->post([this] { start(); });
    if (begin_now) begin(watcher);
  }

 private:
  struct Watcher {
    std::uint64_t id = 0;
    std::string prefix;
    Revision from = 0;  // deliver changes with revision >= from (0 until resolved for "from now on")
    std::shared_ptr<ChangeQueue> queue;
    StreamId replay_to;  // the tail's position when it took this watcher: replay up to it
    bool live = false;   // replay done: the tail delivers directly
    std::vector<std::pair<StreamId, ChangePtr>> buffer;  // what the tail read while replaying
    bool failed = false;
  };

  static Incremented incremented(const std::string& key, std::int64_t by, const RedisReply& reply) {
    if (reply.elements.size() >= 2 && reply.elements[0].str == "type") {
      throw TypeMismatch(key, describe_json(nlohmann::json::parse(reply.elements[1].str)),
                         "a 64-bit integer to increment");
    }
    if (reply.elements.size() >= 2 && reply.elements[0].str == "overflow") {
      throw Error("scale::SharedMemory::increment: key '" + key + "' holds " + reply.elements[1].str + " and adding " +
                  std::to_string(by) + " overflows a 64-bit integer");
    }
    if (reply.elements.size() != 3) throw Error("scale: unexpected answer from Redis to increment");
    return Incremented{to_int(reply.elements[1].str, "sum"), reply.elements[2].integer};
  }

  template <class T, class Convert>
  RedisClient::Callback completer(const PromiseCallback<T>& bridge, std::string name, Convert convert) {
    return bridge.template callback<RedisReply>(
        [this, name = std::move(name), convert = std::move(convert)](RedisReply reply) {
          if (reply.is_error()) std::rethrow_exception(m_client->error_of(name, reply));
          return convert(reply);
        });
  }

  template <class T, class Convert>
  Future<T> call(std::string name, std::vector<std::string> args, Convert convert) {
    PromiseCallback<T> bridge;
    m_client->send(RedisClient::Role::commands, std::move(args), completer<T>(bridge, std::move(name), convert));
    return std::move(bridge.future);
  }

  template <class T, class Convert>
  Future<T> script(const RedisScript& script, std::vector<std::string> args, Convert convert) {
    PromiseCallback<T> bridge;
    m_client->eval(script, {m_keys.begin(), m_keys.end()}, std::move(args), completer<T>(bridge, "a script", convert));
    return std::move(bridge.future);
  }

  // --- watches: one tail reader per store, plus a replay per watcher ---------------------------
  // NOTE: the tail reads the stream on the blocking connection from its position on. A new
  // watcher takes the tail's position P: it replays (from, P] with XRANGE on the commands
  // connection while the tail buffers what comes after P for it; then it delivers the buffer and
  // goes live. Every step runs on the I/O thread or under m_watch_mutex, and every queue is fed
  // under that mutex, so each sees its changes once, in stream order.

  /// The tail's first read: where the stream ends now.
  void start() {
    m_client->send(RedisClient::Role::blocking, {"XREVRANGE", m_keys[2], "+", "-", "COUNT", "1"},
                   [this](std::exception_ptr error, RedisReply reply) {
                     if (error || reply.is_error()) {
                       fail_all(error ? error : m_client->error_of("XREVRANGE", reply), true);
                       m_client->post([this] { start(); }, 200);
                       return;
                     }
                     StreamId position;
                     if (!reply.elements.empty()) position = StreamId::parse(reply.elements[0].elements[0].str);
                     std::vector<std::shared_ptr<Watcher>> waiting;
                     {
                       std::lock_guard lock(m_watch_mutex);
                       m_position = position;
                       m_tail_known = true;
                       waiting = m_watchers;
                       for (auto& watcher : waiting) watcher->replay_to = position;
                     }
                     for (auto& watcher : waiting) begin(watcher);
                     read_tail();
                   });
  }

  /// Fails the watchers still waiting to start (the tail could not start) or every watcher.
  void fail_all(std::exception_ptr error, bool only_waiting) {
    std::vector<std::shared_ptr<Watcher>> failed;
    {
      std::lock_guard lock(m_watch_mutex);
      for (auto& watcher : m_watchers)
        if (!only_waiting || !watcher->live) {
          watcher->failed = true;
          failed.push_back(watcher);
        }
      std::erase_if(m_watchers, [](const auto& watcher) { return watcher->failed; });
    }
    for (auto& watcher : failed) watcher->queue->set_error(error);
  }

  void read_tail() {
    std::string from;
    {
      std::lock_guard lock(m_watch_mutex);
      from = m_position.text();
    }
    m_client->send(RedisClient::Role::blocking, {"XREAD", "COUNT", "1000", "BLOCK", "1000", "STREAMS", m_keys[2], from},
                   [this](std::exception_ptr error, RedisReply reply) {
                     if (error || reply.is_error()) {
                       m_client->post([this] { read_tail(); }, 200);  // the connection reopens with backoff
                       return;
                     }
                     if (!reply.is_nil() && !reply.elements.empty()) tail_entries(reply.elements[0].elements[1]);
                     read_tail();
                   });
  }

  void tail_entries(const RedisReply& entries) {
    std::vector<std::shared_ptr<ChangeQueue>> to_schedule;
    std::vector<std::shared_ptr<Watcher>> lost;
    {
      std::lock_guard lock(m_watch_mutex);
      for (const auto& item : entries.elements) {
        auto [id, change] = decode_change(item);
        if (!id.follows(m_position)) {
          // The stream was trimmed past what the tail had read: no watcher may see a silent gap.
          for (auto& watcher : m_watchers) watcher->failed = true;
          lost = std::move(m_watchers);
          m_watchers.clear();
        }
        m_position = id;
        for (auto& watcher : m_watchers) {
          if (!change->key.starts_with(watcher->prefix)) continue;
          if (!watcher->live) {
            watcher->buffer.emplace_back(id, change);
          } else if (change->revision >= watcher->from && watcher->queue->enqueue(change)) {
            to_schedule.push_back(watcher->queue);
          }
        }
      }
    }
    for (auto& queue : to_schedule) queue->schedule();
    for (auto& watcher : lost)
      watcher->queue->set_error(std::make_exception_ptr(Compacted(watcher->from, m_position.revision)));
  }

  void begin(std::shared_ptr<Watcher> watcher) {
    if (watcher->from == 0) {
      // "From now on": every revision up to the counter now was written before watch() was called.
      m_client->send(RedisClient::Role::commands, {"GET", m_keys[0]},
                     [this, watcher](std::exception_ptr error, RedisReply reply) {
                       if (error || reply.is_error())
                         return fail(watcher, error ? error : m_client->error_of("GET", reply));
                       Revision now = reply.is_nil() ? 0 : to_int(reply.str, "revision");
                       {
                         std::lock_guard lock(m_watch_mutex);
                         watcher->from = now + 1;
                       }
                       go_live(watcher);
                     });
      return;
    }
    if (watcher->from > watcher->replay_to.revision) return go_live(watcher);
    replay(watcher, StreamId{watcher->from, 0}, std::nullopt);
  }

  /// XRANGE from `start` (inclusive) up to replay_to, checking that nothing is missing.
  void replay(std::shared_ptr<Watcher> watcher, StreamId start, std::optional<StreamId> previous) {
    std::string start_text = previous ? "(" + previous->text() : start.text();
    m_client->send(RedisClient::Role::commands,
                   {"XRANGE", m_keys[2], start_text, watcher->replay_to.text(), "COUNT", "1000"},
                   [this, watcher, start, previous](std::exception_ptr error, RedisReply reply) mutable {
                     if (error || reply.is_error())
                       return fail(watcher, error ? error : m_client->error_of("XRANGE", reply));
                     std::vector<std::shared_ptr<ChangeQueue>> to_schedule;
                     bool compacted = false;
                     Revision oldest = 0;
                     {
                       std::lock_guard lock(m_watch_mutex);
                       if (watcher->failed) return;
                       for (const auto& item : reply.elements) {
                         auto [id, change] = decode_change(item);
                         bool in_order = previous ? id.follows(*previous) : id == start;
                         if (!in_order) {
                           compacted = true;
                           oldest = id.index == 0 ? id.revision : id.revision + 1;
                           break;
                         }
                         previous = id;
                         if (change->key.starts_with(watcher->prefix) && watcher->queue->enqueue(change))
                           to_schedule.push_back(watcher->queue);
                       }
                       if (!compacted && reply.elements.empty() && (!previous || *previous < watcher->replay_to)) {
                         compacted = true;  // the whole range is gone
                         oldest = watcher->replay_to.revision + 1;
                       }
                     }
                     for (auto& queue : to_schedule) queue->schedule();
                     if (compacted) return fail(watcher, std::make_exception_ptr(Compacted(watcher->from, oldest)));
                     if (*previous < watcher->replay_to) return replay(watcher, start, previous);
                     go_live(watcher);
                   });
  }

  void go_live(const std::shared_ptr<Watcher>& watcher) {
    bool schedule = false;
    {
      std::lock_guard lock(m_watch_mutex);
      if (watcher->failed) return;
      for (auto& [id, change] : watcher->buffer)
        if (change->revision >= watcher->from) schedule = watcher->queue->enqueue(change) || schedule;
      watcher->buffer.clear();
      watcher->live = true;
    }
    watcher->queue->set_ready();
    if (schedule) watcher->queue->schedule();
  }

  void fail(const std::shared_ptr<Watcher>& watcher, std::exception_ptr error) {
    {
      std::lock_guard lock(m_watch_mutex);
      watcher->failed = true;
      std::erase(m_watchers, watcher);
    }
    watcher->queue->set_error(std::move(error));
  }

  void unwatch(std::uint64_t id) {
    std::shared_ptr<Watcher> removed;  // released after the lock
    std::lock_guard lock(m_watch_mutex);
    auto found = std::find_if(m_watchers.begin(), m_watchers.end(), [&](const auto& w) { return w->id == id; });
    if (found == m_watchers.end()) return;
    removed = *found;
    removed->failed = true;
    m_watchers.erase(found);
  }

  std::unique_ptr<RedisClient> m_client;
  const std::array<std::string, 4> m_keys;
  const std::string m_history;

  std::mutex m_watch_mutex;
  std::vector<std::shared_ptr<Watcher>> m_watchers;
  std::uint64_t m_next_watcher = 0;
  bool m_tail_started = false;
  bool m_tail_known = false;
  StreamId m_position;  // the last stream entry the tail has read
};

}  // namespace

std::shared_ptr<MemoryBackend> make_redis_memory(const std::string& text) {
  auto url = parse_redis_url(text);
  std::string tag = "{scale}";
  std::size_t history = 10'000;
  for (const auto& [name, value] : url.query) {
    if (name == "namespace") {
      tag = "{scale:" + value + "}";
    } else if (name == "history") {
      auto parsed = to_int(value, "history");
      if (parsed < 1) throw Error("scale::SharedMemory(\"" + text + "\"): history must be at least 1");
      history = static_cast<std::size_t>(parsed);
    } else {
      throw Error("scale::SharedMemory(\"" + text + "\"): unknown option '" + name +
                  "'; the options are namespace and history");
    }
  }
  return std::make_shared<RedisMemory>(std::move(url), std::move(tag), history);
}

}  // namespace scale::detail
