// scale::StoreServer: the in-process SharedMemory and SharedEventEmitter backends served over
// HTTP/1.1 with Boost.Beast, written as a few small coroutines (listen, session, stream_events) on
// the server's own io_context. The answers come from detail::StoreRouter (src/store/store_router.cpp)
// and the store logic is the in-process backend's; this file only speaks HTTP.

#include <scale/store_server.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "core/entry_json.hpp"
#include <scale/detail/event_backend.hpp>
#include <scale/detail/memory_backend.hpp>
#include "in_process/in_process_events.hpp"
#include "store/completion_thread.hpp"
#include "store/request_reader.hpp"
#include "store/store_log.hpp"
#include "store/store_router.hpp"
#include "remote/wire_error.hpp"
#include <scale/error.hpp>

namespace scale {

unsigned default_store_io_threads() noexcept { return std::max(1u, std::thread::hardware_concurrency() / 2); }

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using Request = detail::HttpRequest;
using Response = detail::HttpResponse;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

/// Descriptors kept free of connections: the log and a snapshot being written, each I/O thread's
/// epoll and eventfd, timers, stdio, the spare one of the acceptor.
constexpr std::size_t descriptor_reserve = 64;

/// Raises the soft descriptor limit to the hard one; the connections it leaves room for.
std::size_t descriptor_budget() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return std::numeric_limits<std::size_t>::max();
  if (limit.rlim_cur != limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  if (limit.rlim_cur == RLIM_INFINITY) return std::numeric_limits<std::size_t>::max();
  auto descriptors = static_cast<std::size_t>(limit.rlim_cur);
  return descriptors > 2 * descriptor_reserve ? descriptors - descriptor_reserve : descriptors / 2;
}

// NOTE: Asio finds the running thread's recycling cache for coroutine frames and operations
// through a per-thread pointer, and a coroutine may use it after resuming on another thread than
// the one it began on (forward_when_ready below resumes where a Future completes, then posts; a
// strand on a context run by several threads resumes on either). The library is built with
// BOOST_ASIO_DISABLE_THREAD_KEYWORD_EXTENSION (CMakeLists.txt), so Asio reads that pointer with
// pthread_getspecific, a call no compiler may reuse across a co_await. With the default __thread
// pointer, Clang 16 keeps its address in the frame and takes blocks from another thread's cache
// (heap corruption; tests/asio_thread_hop_test.cpp reproduces it), which once forced these
// coroutines to be compiled unoptimized. They are now optimized under every compiler.

/// One SSE event; `data` is a single-line JSON text (dump() never emits a newline).
std::string sse_event(std::string_view data, std::optional<Revision> id = std::nullopt, std::string_view event = {}) {
  std::string out;
  if (id) out += "id: " + std::to_string(*id) + "\n";
  if (!event.empty()) out += "event: " + std::string(event) + "\n";
  out += "data: ";
  out += data;
  out += "\n\n";
  return out;
}

/// A watch's event for one change: its JSON, with the change's revision as the event's id.
std::string change_event(const Change& change) {
  json data = change;
  return sse_event(data.dump(-1, ' ', false, json::error_handler_t::replace), change.revision);
}

/// A failed subscription's event: the error's wire form ({"error", "type", and what rebuilds it}),
/// which a client maps back to its type, under the name `compacted` for a Compacted one and
/// `error` otherwise; on a shared stream with the part it ends.
std::string failure_event(const std::exception_ptr& error, std::optional<std::size_t> part = std::nullopt) {
  json wire = detail::error_to_json(error);
  const bool compacted = wire.at("type") == "Compacted";
  if (part) wire["part"] = *part;
  return sse_event(wire.dump(-1, ' ', false, json::error_handler_t::replace), std::nullopt,
                   compacted ? "compacted" : "error");
}

/// A shared stream's message for one emit: `event: event` with the part it is for, the name it was
/// emitted under and its payload (the same for event= and event_prefix= parts). Written by hand,
/// not built as a JSON object, so the payload is not copied.
std::string event_message(std::size_t part, std::string_view name, const json& payload) {
  std::string out = "event: event\ndata: {\"part\":" + std::to_string(part) + ",\"name\":";
  out += json(name).dump(-1, ' ', false, json::error_handler_t::replace);
  out += ",\"payload\":";
  out += payload.dump(-1, ' ', false, json::error_handler_t::replace);
  out += "}\n\n";
  return out;
}

/// About how much of the history a replaying watch reads at a time (src/in_process's pages).
constexpr std::size_t replay_page_bytes = 1024 * 1024;

struct SseChannel;

/// What every SSE subscriber of a server has queued, bounded as a whole (--max-queued-bytes):
/// past the limit, the subscribers with the most queued are cut off first.
/// NOTE: lock order: `mutex` before a channel's mutex.
struct QueueBudget {
  explicit QueueBudget(std::size_t limit) : limit(limit) {}
  void add(SseChannel* channel) {
    std::lock_guard lock(mutex);
    channels.push_back(channel);
  }
  void remove(SseChannel* channel) {
    std::lock_guard lock(mutex);
    std::erase(channels, channel);
  }
  /// Any thread, holding no channel's mutex: cuts off the largest queues until the total fits.
  void enforce();

  const std::size_t limit;
  std::atomic<std::size_t> total{0};
  std::mutex mutex;
  std::vector<SseChannel*> channels;  // those being written out
};

/// What an SSE subscription's handler (on any thread) hands to the connection writing it out.
/// NOTE: `pending`, `queued` and `overflowed` are guarded by `mutex`; `timer` and `stream` belong
/// to the connection's I/O thread, so a handler only posts to that thread to wake the writer.
struct SseChannel : std::enable_shared_from_this<SseChannel> {
  SseChannel(asio::any_io_executor executor, std::size_t limit, std::shared_ptr<QueueBudget> budget)
      : timer(std::move(executor)), limit(limit), budget(std::move(budget)) {}

  /// Any thread: queue `text`; past the limit (this subscriber's, or all of theirs) the
  /// subscriber is cut off instead.
  void push(std::string text) {
    push_built([&text] { return std::move(text); });
  }

  /// Any thread: queue what `build` returns, built under the channel's lock, so that texts which
  /// number themselves (a shared stream's ids) are queued in the order they were numbered.
  template <class Build>
  void push_built(Build build) {
    {
      std::lock_guard lock(mutex);
      if (overflowed) return;
      std::string text = build();
      if (queued + text.size() > limit) {
        cut_off_locked();
      } else {
        queued += text.size();
        budget->total += text.size();
        pending += text;
      }
    }
    asio::post(timer.get_executor(), [self = shared_from_this()] { self->wake(); });
    if (budget->total.load() > budget->limit) budget->enforce();
  }

  /// Any thread: cut off (the queued bytes are dropped).
  void cut_off() {
    {
      std::lock_guard lock(mutex);
      if (overflowed) return;
      cut_off_locked();
    }
    asio::post(timer.get_executor(), [self = shared_from_this()] { self->wake(); });
  }

  /// The writer: `n` bytes taken from `pending` were written.
  void written(std::size_t n) {
    std::lock_guard lock(mutex);
    if (overflowed) return;  // already given back
    queued -= n;
    budget->total -= n;
  }

  /// Queued bytes, written or not yet taken; 0 once cut off.
  std::size_t queued_bytes() {
    std::lock_guard lock(mutex);
    return queued;
  }

  /// Strand only: wakes the writer; an overflowed subscriber's socket is closed, since its writer
  /// may be stuck in a write the client never reads.
  void wake() {
    timer.cancel();
    bool cut;
    {
      std::lock_guard lock(mutex);
      cut = overflowed;
    }
    if (cut && stream) {
      beast::error_code ignored;
      stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
      stream->socket().close(ignored);
    }
  }

  asio::steady_timer timer;
  beast::tcp_stream* stream = nullptr;  // its I/O thread only; null once the connection stops writing
  std::mutex mutex;
  std::string pending;
  std::size_t queued = 0;  // pending plus what the writer took and has not written yet
  bool overflowed = false;
  const std::size_t limit;
  const std::shared_ptr<QueueBudget> budget;

 private:
  void cut_off_locked() {
    overflowed = true;
    budget->total -= queued;
    queued = 0;
    pending.clear();
    pending.shrink_to_fit();
  }
};

void QueueBudget::enforce() {
  std::lock_guard lock(mutex);
  std::vector<std::pair<std::size_t, SseChannel*>> by_size;
  by_size.reserve(channels.size());
  for (SseChannel* channel : channels) by_size.emplace_back(channel->queued_bytes(), channel);
  std::sort(by_size.begin(), by_size.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [size, channel] : by_size) {
    if (total.load() <= limit || size == 0) break;
    channel->cut_off();
  }
}

/// One accepted connection; every member is touched on its I/O thread only (the one thread that
/// runs its io_context, so no strand is needed).
struct Connection : std::enable_shared_from_this<Connection> {
  explicit Connection(tcp::socket socket) : stream(std::move(socket)), watchdog(stream.get_executor()) {}
  beast::tcp_stream stream;
  // NOTE: a read's time limit is one timer per connection that is re-armed only when it fires
  // (at most once per limit) rather than a timer started and cancelled around every read: a read
  // stores its deadline, and the timer, on expiry, cancels a read still running past it.
  asio::steady_timer watchdog;
  std::chrono::steady_clock::time_point read_deadline = std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point watchdog_expiry{};  // while armed
  bool watchdog_armed = false;
  bool timed_out = false;  // the watchdog cancelled the read
  bool closed = false;     // the session ended: the watchdog stays disarmed
  bool idle = false;  // waiting for the next request's headers
  bool stopping = false;
  unsigned shard = 0;  // its I/O thread's index (RequestCounts)

  /// A read until `deadline` starts.
  void arm(std::chrono::steady_clock::time_point deadline) {
    read_deadline = deadline;
    if (watchdog_armed && watchdog_expiry <= deadline) return;  // fires first, then re-arms
    watchdog_expiry = deadline;
    watchdog_armed = true;
    watchdog.expires_at(deadline);  // cancels an earlier wait, whose handler then sees it is stale
    watchdog.async_wait([self = shared_from_this(), deadline](beast::error_code) { self->fired(deadline); });
  }
  /// The read ended.
  void disarm() { read_deadline = std::chrono::steady_clock::time_point::max(); }
  /// The session ended.
  void close() {
    closed = true;
    watchdog_armed = false;
    watchdog.cancel();
  }

 private:
  void fired(std::chrono::steady_clock::time_point expiry) {
    if (closed || !watchdog_armed || expiry != watchdog_expiry) return;  // cancelled, or re-armed since
    watchdog_armed = false;
    if (read_deadline == std::chrono::steady_clock::time_point::max()) return;  // no read: the next arms it
    if (std::chrono::steady_clock::now() < read_deadline) {
      arm(read_deadline);
      return;
    }
    timed_out = true;
    beast::error_code ignored;
    stream.socket().cancel(ignored);
  }

 public:
  std::chrono::steady_clock::time_point request_started;  // for the latency histogram
  std::shared_ptr<SseChannel> channel;                    // while streaming events
  std::string out;  // the answer being written, reused from one request to the next
};

/// `response` as HTTP/1.x text, into `out` (Beast's serializer, by hand: one contiguous buffer).
void serialize(const Response& response, std::string& out, bool head_only) {
  out.clear();
  out += response.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  char status[8];
  auto [end, ec] = std::to_chars(status, status + sizeof status, response.result_int());
  out.append(status, end);
  out += ' ';
  out += response.reason();
  out += "\r\n";
  for (const auto& field : response) {
    out += field.name_string();
    out += ": ";
    out += field.value();
    out += "\r\n";
  }
  out += "\r\n";
  if (!head_only) out += response.body();
}

/// Requests by endpoint and status, for /metrics: counters without a lock, one set per I/O thread
/// (each adds to its own; /metrics sums them), so counting costs no shared cache line.
class RequestCounts {
 public:
  explicit RequestCounts(unsigned shards) : m_shards(std::max(1u, shards)) {}

  /// `endpoint` is a name StoreRouter::endpoint() returns, "refused", or any other (counted as
  /// "unknown" past the known ones).
  void add(unsigned shard, std::string_view endpoint, unsigned status) {
    const std::size_t slot = status >= first_status && status < first_status + statuses ? status - first_status : 0;
    bump(shard_of(shard).counts[endpoint_index(endpoint) * statuses + slot]);
  }
  /// One answered request's time from its headers read to its answer written.
  void observe(unsigned shard, std::chrono::steady_clock::duration elapsed) {
    Shard& counts = shard_of(shard);
    const double seconds = std::chrono::duration<double>(elapsed).count();
    std::size_t bucket = 0;
    while (bucket < latency_bounds.size() && seconds > latency_bounds[bucket]) ++bucket;
    bump(counts.buckets[bucket]);  // the first bound it is within (latency_bounds.size(): none)
    counts.latency_ns.fetch_add(
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()),
        std::memory_order_relaxed);
  }

  std::string render() {
    std::string out = "# HELP scale_store_requests_total Requests answered, by endpoint and status.\n"
                      "# TYPE scale_store_requests_total counter\n";
    std::vector<std::size_t> order(endpoint_names.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [](std::size_t a, std::size_t b) { return endpoint_names[a] < endpoint_names[b]; });
    for (std::size_t e : order)
      for (std::size_t slot = 0; slot < statuses; ++slot) {
        std::uint64_t count = 0;
        for (const auto& shard : m_shards) count += shard.counts[e * statuses + slot].load(std::memory_order_relaxed);
        if (count == 0) continue;
        out += "scale_store_requests_total{endpoint=\"" + std::string(endpoint_names[e]) + "\",status=\"" +
               std::to_string(slot + first_status) + "\"} " + std::to_string(count) + "\n";
      }
    out += "# HELP scale_store_request_duration_seconds Time from a request's headers to its answer written.\n"
           "# TYPE scale_store_request_duration_seconds histogram\n";
    std::array<std::uint64_t, latency_bounds.size() + 1> buckets{};
    std::uint64_t latency_ns = 0;
    for (const auto& shard : m_shards) {
      for (std::size_t i = 0; i < buckets.size(); ++i) buckets[i] += shard.buckets[i].load(std::memory_order_relaxed);
      latency_ns += shard.latency_ns.load(std::memory_order_relaxed);
    }
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < latency_bounds.size(); ++i) {
      cumulative += buckets[i];
      char bound[32];
      std::snprintf(bound, sizeof bound, "%g", latency_bounds[i]);
      out += "scale_store_request_duration_seconds_bucket{le=\"" + std::string(bound) + "\"} " +
             std::to_string(cumulative) + "\n";
    }
    const std::uint64_t observed = cumulative + buckets.back();
    out += "scale_store_request_duration_seconds_bucket{le=\"+Inf\"} " + std::to_string(observed) + "\n";
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.9f", static_cast<double>(latency_ns) / 1e9);
    out += "scale_store_request_duration_seconds_sum " + std::string(sum) + "\n";
    out += "scale_store_request_duration_seconds_count " + std::to_string(observed) + "\n";
    return out;
  }

 private:
  static constexpr std::array<double, 10> latency_bounds{0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                         0.005,  0.01,    0.05,   0.25,  1.0};
  // Every name StoreRouter::endpoint() returns, and the server's own "refused"; "unknown" last.
  static constexpr std::array<std::string_view, 16> endpoint_names{
      "healthz", "metrics",     "ui",     "kv_set_many", "kv_list",       "kv_get", "kv_put",  "kv_delete",
      "kv_other", "increment", "watch", "stream",      "events_emit", "events_stream", "refused", "unknown"};
  static constexpr unsigned first_status = 100;
  static constexpr std::size_t statuses = 500;  // 100..599 (any other is counted as 100)

  struct Shard {
    std::array<std::atomic<std::uint64_t>, endpoint_names.size() * statuses> counts{};
    std::array<std::atomic<std::uint64_t>, latency_bounds.size() + 1> buckets{};
    std::atomic<std::uint64_t> latency_ns{0};
  };

  static std::size_t endpoint_index(std::string_view endpoint) {
    for (std::size_t i = 0; i + 1 < endpoint_names.size(); ++i)
      if (endpoint_names[i] == endpoint) return i;
    return endpoint_names.size() - 1;
  }
  Shard& shard_of(unsigned shard) { return m_shards[shard % m_shards.size()]; }
  /// One writer per shard in practice (its I/O thread); fetch_add keeps any other caller exact.
  static void bump(std::atomic<std::uint64_t>& counter) { counter.fetch_add(1, std::memory_order_relaxed); }

  std::vector<Shard> m_shards;
};

/// An I/O thread as the place where journaled writes it made complete (src/store/completion_thread.hpp).
class IoCompletionThread final : public detail::CompletionThread {
 public:
  explicit IoCompletionThread(asio::io_context& context) : m_context(context) {}
  void post(std::function<void()> work) override {
    if (m_serving.load(std::memory_order_acquire))
      asio::post(m_context, std::move(work));
    else
      work();  // the thread has stopped: on the caller (the log's writer), as without a thread
  }
  /// The thread stopped serving (stop() joined it).
  void stopped() noexcept { m_serving.store(false, std::memory_order_release); }

 private:
  asio::io_context& m_context;
  std::atomic<bool> m_serving{true};
};

/// Waits for a scale::Future from Asio: a detached scale coroutine awaits it, resuming on the
/// thread that completes the Future (never through a Runtime's loop, which an embedding program
/// may keep busy), and posts the result to the handler's executor, so no I/O thread blocks.
/// Completes with (exception, value).
template <class T, class Handler>
detail::Detached forward_when_ready(Future<T> future, Handler handler) {
  auto work = asio::make_work_guard(asio::get_associated_executor(handler));
  std::exception_ptr error;
  T value{};
  try {
    value = co_await detail::resume_where_completed(std::move(future));
  } catch (...) {
    error = std::current_exception();
  }
  auto executor = work.get_executor();
  asio::post(executor, [handler = std::move(handler), error, value = std::move(value)]() mutable {
    std::move(handler)(error, std::move(value));
  });
}

template <class T, class CompletionToken>
auto async_wait(Future<T> future, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(std::exception_ptr, T)>(
      [](auto handler, Future<T> waited) { forward_when_ready(std::move(waited), std::move(handler)); }, token,
      std::move(future));
}

}  // namespace

struct StoreServer::Impl : std::enable_shared_from_this<Impl> {
  explicit Impl(StoreServerOptions options)
      : options(std::move(options)),
        memory(open_memory(this->options, log)),
        events(detail::make_in_process_bus()),
        ioc(1) {
    // GET /healthz answers 503 while the log cannot make writes durable.
    if (log) router.set_health([log = log] { return log->health(); });
  }

  /// The store's memory; with a data_dir, recovered from it and journaled to `log`.
  static std::shared_ptr<detail::MemoryBackend> open_memory(const StoreServerOptions& options,
                                                            std::shared_ptr<detail::StoreLog>& log) {
    detail::InProcessMemoryOptions memory_options{.history = options.history, .history_bytes = options.history_bytes};
    if (options.data_dir.empty()) return detail::make_in_process_memory(std::move(memory_options));
    detail::RecoveredMemory recovered;
    log = detail::StoreLog::open({.dir = options.data_dir,
                                  .fsync = options.fsync,
                                  .compact_min_bytes = options.compact_min_bytes,
                                  .history = options.history},
                                 recovered);
    memory_options.journal = log;
    return detail::make_in_process_memory(std::move(memory_options), std::move(recovered));
  }

  StoreServerOptions options;
  std::shared_ptr<detail::StoreLog> log;  // with a data_dir
  std::shared_ptr<detail::MemoryBackend> memory;
  std::shared_ptr<detail::InProcessEvents> events;  // with subscribers by prefix, for event_prefix=
  // NOTE: built from the members above once the constructor has made them; it shares the backends.
  detail::StoreRouter router{memory, events, options, [this] { return metrics(); }};
  asio::io_context ioc;
  // NOTE: one io_context per I/O thread (ioc is the first), each connection served by one of them
  // in turn: a connection's reads, answers and writes then stay on one thread, with no hand-off
  // between threads sharing one context (a wake-up per event, which doubled one client's latency).
  std::vector<std::unique_ptr<asio::io_context>> more_contexts;
  // Each context's thread as the place where its journaled writes complete (ioc's first).
  std::vector<std::unique_ptr<IoCompletionThread>> completion_threads;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> keep_running;
  std::size_t next_context = 0;  // the listener's strand only
  std::optional<tcp::acceptor> acceptor;
  // NOTE: the listener's accept is bound to another context, so its operation holds a
  // socket of that context: stop() waits for the listener to end before any context stops, or
  // ~io_context (ioc is destroyed last) would destroy a pending accept whose socket's context
  // is gone (a use-after-free).
  std::promise<void> listener_ended;
  std::vector<std::thread> threads;
  std::atomic<std::uint16_t> bound_port{0};
  std::mutex lifecycle;  // start/stop
  bool started = false, stopped = false;

  RequestCounts counts{std::max(1u, options.io_threads)};
  std::atomic<std::int64_t> subscribers{0};
  std::shared_ptr<QueueBudget> queue_budget = std::make_shared<QueueBudget>(options.max_queued_bytes);
  // The connection cap in force: options.max_connections, lowered to what the descriptor limit
  // allows (set by start()).
  std::size_t max_connections = 0;
  // NOTE: a descriptor held in reserve (on /dev/null): when accept() fails for want of
  // descriptors, it is closed to accept the waiting client and answer it 503, then reopened, so
  // that no client waits in the backlog for an answer that never comes.
  int spare_descriptor = -1;

  // Open connections and how to close each (posted to its I/O thread) at stop().
  std::mutex connections_mutex;
  std::condition_variable connections_idle;
  std::unordered_map<std::uint64_t, std::shared_ptr<Connection>> connections;
  std::uint64_t next_connection = 0;
  std::atomic<bool> stopping{false};

  // ---------------------------------------------------------------------------------------------
  asio::awaitable<void> listen() {
    for (;;) {
      std::size_t index = next_context++ % (more_contexts.size() + 1);
      asio::io_context& context = index == 0 ? ioc : *more_contexts[index - 1];
      auto [ec, socket] = co_await acceptor->async_accept(context, use_tuple);
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) co_return;
        if (ec == asio::error::no_descriptors) refuse_without_descriptors();
        // Pause briefly rather than spin, then take the next connection.
        asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(10));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      if (stopping) co_return;
      auto connection = std::make_shared<Connection>(tcp::socket(std::move(socket)));
      connection->shard = static_cast<unsigned>(index);
      std::uint64_t id;
      bool over_cap;
      {
        std::lock_guard lock(connections_mutex);
        over_cap = connections.size() >= max_connections;
        id = ++next_connection;
        connections.emplace(id, connection);
      }
      auto executor = connection->stream.get_executor();
      asio::co_spawn(executor, over_cap ? refuse(connection) : session(connection),
                     [this, id](std::exception_ptr error) {
                       if (error) {
                         try {
                           std::rethrow_exception(error);
                         } catch (const std::exception& e) {
                           detail::log_error(std::string("scale-store: a connection ended with an error: ") + e.what());
                         } catch (...) {
                         }
                       }
                       forget(id);
                     });
    }
  }

  void forget(std::uint64_t id) {
    std::shared_ptr<Connection> removed;  // destroyed after the lock
    std::lock_guard lock(connections_mutex);
    auto found = connections.find(id);
    if (found != connections.end()) {
      removed = std::move(found->second);
      connections.erase(found);
    }
    if (connections.empty()) connections_idle.notify_all();
  }

  template <class Body>
  Response error_response(const http::request<Body>& request, http::status status, std::string_view message) {
    return router.error_response(request, status, message);
  }

  /// The listener's strand, after accept() failed with EMFILE/ENFILE: the waiting client is
  /// accepted on the spare descriptor, answered 503 (as much as its socket takes at once) and
  /// closed.
  void refuse_without_descriptors() {
    if (spare_descriptor < 0) return;
    ::close(spare_descriptor);
    spare_descriptor = -1;
    int client = ::accept4(acceptor->native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client >= 0) {
      Request request{http::verb::get, "/", 11};
      auto response = error_response(request, http::status::service_unavailable,
                                     "the server has no file descriptors left for another connection; try again later");
      response.keep_alive(false);
      std::string out;
      serialize(response, out, false);
      [[maybe_unused]] auto sent = ::send(client, out.data(), out.size(), MSG_NOSIGNAL);
      ::shutdown(client, SHUT_WR);
      ::close(client);
      counts.add(0, "refused", 503);
    }
    spare_descriptor = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }

  /// One more than the cap: answered 503 and closed.
  asio::awaitable<void> refuse(std::shared_ptr<Connection> connection) {
    Request request{http::verb::get, "/", 11};
    auto response = error_response(
        request, http::status::service_unavailable,
        "the server has reached its connection limit (" + std::to_string(max_connections) + "); try again later");
    response.keep_alive(false);
    connection->stream.expires_after(std::chrono::seconds(1));
    co_await http::async_write(connection->stream, response, use_tuple);
    beast::error_code ignored;
    connection->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    counts.add(connection->shard, "refused", 503);
  }

  /// Writes `response`; `head_only` (a HEAD request) leaves its body out, Content-Length kept.
  asio::awaitable<bool> write(Connection& connection, Response& response, std::string_view endpoint,
                              bool head_only = false) {
    counts.add(connection.shard, endpoint, response.result_int());
    std::string& out = connection.out;
    serialize(response, out, head_only);
    // Most answers fit in the socket's send buffer: written here at once (the socket is in
    // non-blocking mode), with no asynchronous operation or timer. The rest waits for the client.
    beast::error_code ec;
    std::size_t written = connection.stream.socket().write_some(asio::buffer(out), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      ec = {};
      written = 0;
    }
    if (!ec && written < out.size()) {
      connection.stream.expires_after(options.read_timeout);
      auto [error, n] = co_await asio::async_write(connection.stream,
                                                   asio::buffer(out.data() + written, out.size() - written), use_tuple);
      ec = error;
    }
    counts.observe(connection.shard, std::chrono::steady_clock::now() - connection.request_started);
    if (out.capacity() > 64 * 1024) std::string().swap(out);  // after a large answer, give the memory back
    co_return !ec;
  }

  // ---------------------------------------------------------------------------------------------
  /// Reads until `reader` has something other than need_more, or `timeout` passes (nullopt).
  asio::awaitable<std::optional<detail::RequestReader::State>> read_until_ready(Connection& connection,
                                                                                detail::RequestReader& reader,
                                                                                std::chrono::milliseconds timeout) {
    using State = detail::RequestReader::State;
    std::optional<std::chrono::steady_clock::time_point> deadline;  // taken at the first wait
    for (;;) {
      State state = reader.parse();
      if (state != State::need_more) co_return state;
      if (!deadline) deadline = std::chrono::steady_clock::now() + timeout;
      // Waiting for a request's first byte, the connection is idle (stop() closes it).
      connection.idle = !reader.in_request();
      // NOTE: the connection's watchdog rather than the stream's expiry, which closes the socket
      // and so leaves no way to answer 408.
      connection.arm(*deadline);
      auto [ec, n] = co_await connection.stream.socket().async_read_some(reader.prepare(), use_tuple);
      connection.disarm();
      connection.idle = false;
      if (connection.timed_out) {
        connection.timed_out = false;
        if (ec == asio::error::operation_aborted) co_return std::nullopt;  // timed out
      }
      reader.commit(n);
      if (ec) reader.eof();
    }
  }

  asio::awaitable<void> session(std::shared_ptr<Connection> connection) {
    using State = detail::RequestReader::State;
    auto& stream = connection->stream;
    beast::error_code option_error;
    // Answers go out whole, in one write: waiting to fill a segment (Nagle) only adds latency.
    stream.socket().set_option(tcp::no_delay(true), option_error);
    stream.socket().non_blocking(true, option_error);  // for write()'s immediate attempt
    detail::RequestReader reader(options.max_body);
    bool unread_input = false;  // closing after an error while the client may still be sending
    // An answer the reader owes the client (a refusal or a timeout), then the connection closes.
    auto refusal = [&](http::status status, std::string_view message) {
      auto response = router.error_response(11, false, status, message);
      unread_input = true;
      return response;
    };
    while (!connection->stopping && !stopping) {
      auto state = co_await read_until_ready(*connection, reader, options.header_timeout);
      connection->request_started = std::chrono::steady_clock::now();
      if (!state) {
        // A client that began a request and did not finish its head in time gets a 408; an idle
        // keep-alive connection is just closed.
        if (reader.in_request()) {
          auto response = refusal(http::status::request_timeout, "the request's headers took longer than " +
                                                                     std::to_string(options.header_timeout.count()) +
                                                                     " ms to arrive");
          co_await write(*connection, response, "unknown");
        }
        break;
      }
      if (*state == State::closed) break;
      if (*state == State::refused) {
        auto response = refusal(reader.refusal_status(), reader.refusal());
        co_await write(*connection, response, "unknown");
        break;
      }

      const auto& peek = reader.head();
      std::string_view endpoint = detail::StoreRouter::endpoint(peek.method(), peek.target());
      const bool head_only = reader.head_only();
      bool body_pending = reader.body_pending();
      std::optional<Response> early = router.check_head(peek, reader.content_length());
      if (early) {
        if (body_pending) early->keep_alive(false);  // the body is never read
        unread_input = body_pending;
        bool ok = co_await write(*connection, *early, endpoint, head_only);
        if (!ok || !early->keep_alive()) break;
        reader.next();
        continue;
      }
      if (body_pending && beast::iequals(peek[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, 11};
        stream.expires_after(options.read_timeout);
        auto [ec, written] = co_await http::async_write(stream, go_on, use_tuple);
        if (ec) break;
      }

      reader.read_body();
      state = co_await read_until_ready(*connection, reader, options.read_timeout);
      if (!state) {
        auto response = refusal(
            http::status::request_timeout,
            "the request's body took longer than " + std::to_string(options.read_timeout.count()) + " ms to arrive");
        co_await write(*connection, response, endpoint);
        break;
      }
      if (*state == State::refused) {
        auto response = refusal(reader.refusal_status(), reader.refusal());
        co_await write(*connection, response, endpoint);
        break;
      }
      if (*state != State::request) break;
      Request request = reader.take();

      Response response;
      if (detail::StoreRouter::is_stream(endpoint)) {
        if (head_only) {
          // What the stream's head would be, and no stream.
          response = router.make_response(request.version(), false, http::status::ok, "", "text/event-stream");
        } else if (auto what = router.stream_request(request, response)) {
          if (what->shared)
            co_await stream_parts(*connection, request, std::move(*what), endpoint);
          else
            co_await stream_events(*connection, request, *what, endpoint);
          break;  // an event stream ends its connection
        }
      } else {
        try {
          Future<Response> answer = router.handle(request);
          if (answer.ready()) {
            response = answer.get();
          } else {
            // A write that completes later (e.g. after an fsync): wait without holding this thread.
            auto [error, answered] = co_await async_wait(std::move(answer), use_tuple);
            if (error) std::rethrow_exception(error);
            response = std::move(answered);
          }
        } catch (const std::exception& error) {  // the router answers its own errors; this is e.g. bad_alloc
          response = error_response(request, http::status::internal_server_error, error.what());
        }
      }
      if (connection->stopping) response.keep_alive(false);
      bool ok = co_await write(*connection, response, endpoint, head_only);
      if (!ok || !response.keep_alive()) break;
    }
    connection->close();
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    if (unread_input) {
      // NOTE: closing a socket with unread input sends a reset, which can destroy the error
      // answer before the client reads it. So read and drop what still comes, for a moment.
      std::array<char, 16 * 1024> sink;
      std::size_t dropped = 0;
      stream.expires_after(std::chrono::milliseconds(500));
      while (dropped < 4 * options.max_body + (1 << 20)) {
        auto [ec, n] = co_await stream.async_read_some(asio::buffer(sink), use_tuple);
        if (ec) break;
        dropped += n;
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  /// The server's part of GET /metrics (the router answers the request).
  std::string metrics() {
    std::string out = counts.render();
    auto gauge = [&](std::string_view name, std::string_view help, std::int64_t value) {
      out += "# HELP " + std::string(name) + " " + std::string(help) + "\n# TYPE " + std::string(name) + " gauge\n" +
             std::string(name) + " " + std::to_string(value) + "\n";
    };
    std::int64_t open;
    {
      std::lock_guard lock(connections_mutex);
      open = static_cast<std::int64_t>(connections.size());
    }
    const detail::MemoryCounts stored = router.counts();
    gauge("scale_store_keys", "Keys in the store.", static_cast<std::int64_t>(stored.keys));
    gauge("scale_store_revision", "The store's latest revision.", stored.revision);
    gauge("scale_store_connections", "Open connections.", open);
    gauge("scale_store_subscribers", "Open watch and event streams.", subscribers.load());
    out += "# HELP scale_store_fsyncs_total fsync calls on the data directory's log.\n"
           "# TYPE scale_store_fsyncs_total counter\nscale_store_fsyncs_total " +
           std::to_string(log ? log->fsyncs() : 0) + "\n";
    auto counter = [&](std::string_view name, std::string_view help, std::uint64_t value) {
      out += "# HELP " + std::string(name) + " " + std::string(help) + "\n# TYPE " + std::string(name) + " counter\n" +
             std::string(name) + " " + std::to_string(value) + "\n";
    };
    gauge("scale_store_recovery_dropped_records",
          "Records recovery dropped from a torn log end at start (a lower bound when zeros followed).",
          static_cast<std::int64_t>(log ? log->recovery_dropped_records() : 0));
    gauge("scale_store_recovery_dropped_bytes", "Bytes recovery dropped from a torn log end at start.",
          static_cast<std::int64_t>(log ? log->recovery_dropped_bytes() : 0));
    counter("scale_store_compactions_total", "Snapshots of the data directory written.", log ? log->compactions() : 0);
    counter("scale_store_compaction_failures_total",
            "Log rotations or snapshots that failed (logged; the writes went on, retried later).",
            log ? log->compaction_failures() : 0);
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  /// An event stream's head (200, text/event-stream, no length: the stream ends the connection).
  asio::awaitable<beast::error_code> write_stream_head(Connection& connection, const Request& request,
                                                       std::string_view endpoint) {
    http::response<http::empty_body> head{http::status::ok, request.version()};
    head.set(http::field::server, "scale-store");
    head.set(http::field::content_type, "text/event-stream");
    head.set(http::field::cache_control, "no-cache");
    if (!options.cors_origin.empty()) head.set(http::field::access_control_allow_origin, options.cors_origin);
    head.keep_alive(true);
    head.chunked(false);
    counts.add(connection.shard, endpoint, 200);
    http::response_serializer<http::empty_body> serializer{head};
    connection.stream.expires_after(options.read_timeout);
    auto [head_error, n] = co_await http::async_write_header(connection.stream, serializer, use_tuple);
    co_return head_error;
  }

  /// Writes `out`, then what the subscriptions queue in `channel`, with a keep-alive comment when
  /// idle, until the client goes away, the server stops or the channel is cut off; `ended`: once
  /// `out` and the queue are written, the stream ends.
  asio::awaitable<void> forward(Connection& connection, SseChannel& channel, std::string out, bool ended) {
    auto& stream = connection.stream;
    bool queued = false;  // `out` was taken from the channel's queue (and counts in it)
    while (!connection.stopping) {
      if (out.empty()) {
        bool overflowed;
        {
          std::lock_guard lock(channel.mutex);
          out.swap(channel.pending);
          overflowed = channel.overflowed;
        }
        if (overflowed) break;
        queued = !out.empty();
      }
      if (out.empty()) {
        if (ended) break;
        channel.timer.expires_after(options.sse_heartbeat);
        auto [wait_error] = co_await channel.timer.async_wait(use_tuple);
        if (wait_error) continue;  // woken: something to send (or stopping)
        out = ": keep-alive\n\n";
      }
      stream.expires_after(options.read_timeout);
      auto [ec, written] = co_await asio::async_write(stream, asio::buffer(out), use_tuple);
      if (ec) break;
      if (queued) channel.written(out.size());
      queued = false;
      out.clear();
    }
  }

  // ---------------------------------------------------------------------------------------------
  /// Writes the SSE headers, subscribes, and forwards what the subscription delivers until the
  /// client goes away, the server stops, or the subscriber falls 'max_subscriber_queue' behind.
  /// A watch from a past revision first replays the kept history page by page, each page read
  /// once the last is written, so a backlog of any size is paced by the client's reading and
  /// queues nothing; the live watch then starts where the replay ended.
  asio::awaitable<void> stream_events(Connection& connection, const Request& request, const detail::StreamRequest& what,
                                      std::string_view endpoint) {
    auto& stream = connection.stream;
    auto channel = std::make_shared<SseChannel>(stream.get_executor(), options.max_subscriber_queue, queue_budget);
    channel->stream = &stream;
    queue_budget->add(channel.get());
    connection.channel = channel;

    std::shared_ptr<detail::SubscriptionState> subscription;
    Revision from = what.from;
    detail::HistoryPage page;
    // A failure's event (e.g. `compacted`): the stream sends it and ends.
    auto read_page = [&]() -> std::string {
      try {
        page = router.memory().history_page(what.prefix_or_name, from, replay_page_bytes);
        from = page.next;
        return {};
      } catch (...) {
        return failure_event(std::current_exception());
      }
    };
    auto watch_live = [&]() -> std::string {
      auto queue = std::make_shared<detail::SubscriptionQueue<Change>>(
          [channel](const Change& change) { channel->push(change_event(change)); });
      memory->watch(what.prefix_or_name, from, queue);
      try {
        queue->ready().get();
        subscription = queue;
        ++subscribers;
        return {};
      } catch (...) {
        return failure_event(std::current_exception());
      }
    };
    const bool replay = what.watch && from != 0;
    std::string first;  // a failed watch answers with one event and ends
    if (replay) {
      first = read_page();
    } else if (what.watch) {
      first = watch_live();
    } else {
      auto queue = std::make_shared<detail::SubscriptionQueue<json>>([channel](const json& payload) {
        channel->push(sse_event(payload.dump(-1, ' ', false, json::error_handler_t::replace)));
      });
      events->subscribe(what.prefix_or_name, queue);
      queue->ready().get();
      subscription = queue;
      ++subscribers;
    }

    beast::error_code head_error = co_await write_stream_head(connection, request, endpoint);

    // The ": ready" comment tells a client its subscription is in place (nothing before it is lost;
    // a replay delivers every change from its revision on, or ends with `compacted`).
    std::string out = first.empty() ? std::string(": ready\n\n") : first;
    bool ended = !first.empty();
    if (replay && !ended && !head_error) {
      for (;;) {
        for (const auto& change : page.changes) out += change_event(*change);
        page.changes = {};
        stream.expires_after(options.read_timeout);
        auto [ec, written] = co_await asio::async_write(stream, asio::buffer(out), use_tuple);
        out.clear();
        if (ec || connection.stopping) {
          head_error = ec ? ec : beast::error_code(asio::error::operation_aborted);
          break;
        }
        std::string failed = page.more ? read_page() : watch_live();
        if (!failed.empty()) {
          out = std::move(failed);
          ended = true;
          break;
        }
        if (subscription) break;  // live from here on
      }
      if (out.capacity() > 64 * 1024) std::string().swap(out);
    }
    if (!head_error) co_await forward(connection, *channel, std::move(out), ended);
    queue_budget->remove(channel.get());
    channel->cut_off();  // what is still queued is given back; later deliveries are dropped
    channel->stream = nullptr;
    connection.channel.reset();
    if (subscription) {
      subscription->cancel();
      --subscribers;
    }
  }

  // ---------------------------------------------------------------------------------------------
  /// GET /v1/stream: several watches and event names on one connection (a browser allows six per
  /// host, so a page's client shares one). Events go live at once (they have no history); each
  /// watch replays its past page by page as stream_events does, one watch after the other, then
  /// goes live where its replay ended. Every watch message's id lists, for each watch in the
  /// order asked, the revision it has delivered through, so Last-Event-ID resumes every watch
  /// exactly; a watch that fails (e.g. compacted) gets its error event and the others go on.
  asio::awaitable<void> stream_parts(Connection& connection, const Request& request, detail::StreamRequest what,
                                     std::string_view endpoint) {
    auto& stream = connection.stream;
    auto channel = std::make_shared<SseChannel>(stream.get_executor(), options.max_subscriber_queue, queue_budget);
    channel->stream = &stream;
    queue_budget->add(channel.get());
    connection.channel = channel;

    struct Watched {
      std::size_t part;  // its index among the stream's parts
      std::string prefix;
      Revision from;  // the next revision to read
      bool failed = false;
    };
    // NOTE: each watch's revision delivered through, guarded by channel->mutex: a message is
    // numbered and queued under that lock, so ids never go back in the order written.
    auto cursors = std::make_shared<std::vector<Revision>>();
    std::vector<Watched> watches;
    const Revision now = router.counts().revision + 1;  // "from now on", pinned so a resume has no gap
    for (std::size_t i = 0; i < what.parts.size(); ++i) {
      if (!what.parts[i].watch) continue;
      const Revision from = what.parts[i].from == 0 ? now : what.parts[i].from;
      watches.push_back(Watched{i, std::move(what.parts[i].prefix_or_name), from});
      cursors->push_back(from - 1);
    }
    auto id_line = [cursors] {
      std::string id = "id: ";
      for (std::size_t k = 0; k < cursors->size(); ++k) {
        if (k > 0) id += ',';
        id += std::to_string((*cursors)[k]);
      }
      id += '\n';
      return id;
    };
    auto change_message = [cursors, id_line](std::size_t watch, std::size_t part, const Change& change) {
      (*cursors)[watch] = change.revision;
      json data = change;
      data["part"] = part;
      return id_line() + "event: change\ndata: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
    };

    std::vector<std::shared_ptr<detail::SubscriptionState>> subscriptions;
    for (std::size_t i = 0; i < what.parts.size(); ++i) {
      if (what.parts[i].watch) continue;
      if (what.parts[i].event_prefix) {
        auto queue = std::make_shared<detail::SubscriptionQueue<detail::NamedEvent>>(
            [channel, part = i](const detail::NamedEvent& event) {
              channel->push(event_message(part, event.name, *event.payload));
            });
        events->subscribe_prefix(what.parts[i].prefix_or_name, queue);
        queue->ready().get();
        subscriptions.push_back(std::move(queue));
        continue;
      }
      auto queue = std::make_shared<detail::SubscriptionQueue<json>>(
          [channel, part = i, name = what.parts[i].prefix_or_name](const json& payload) {
            channel->push(event_message(part, name, payload));
          });
      events->subscribe(what.parts[i].prefix_or_name, queue);
      queue->ready().get();
      subscriptions.push_back(std::move(queue));
    }
    ++subscribers;

    // A watch whose start is no longer kept fails before ": ready", so a client can fail its ready.
    std::string out;
    for (auto& watch : watches) {
      try {
        router.memory().history_page(watch.prefix, watch.from, 1);
      } catch (...) {
        out += failure_event(std::current_exception(), watch.part);
        watch.failed = true;
      }
    }
    if (!watches.empty()) out += id_line() + "\n";  // where each watch starts, before any change
    out += ": ready\n\n";

    beast::error_code error = co_await write_stream_head(connection, request, endpoint);
    if (!error) {
      stream.expires_after(options.read_timeout);
      auto [ec, written] = co_await asio::async_write(stream, asio::buffer(out), use_tuple);
      error = ec;
      out.clear();
    }
    for (std::size_t w = 0; w < watches.size() && !error; ++w) {
      Watched& watch = watches[w];
      if (watch.failed) continue;
      bool replayed = false;
      for (;;) {
        std::string taken;  // what live parts queued meanwhile: numbered before this page
        bool overflowed;
        {
          std::lock_guard lock(channel->mutex);
          taken.swap(channel->pending);
          overflowed = channel->overflowed;
          if (!overflowed) {
            try {
              detail::HistoryPage page = router.memory().history_page(watch.prefix, watch.from, replay_page_bytes);
              for (const auto& change : page.changes) out += change_message(w, watch.part, *change);
              if (page.next - 1 > (*cursors)[w]) {
                (*cursors)[w] = page.next - 1;  // the page looked at every revision before `next`
                out += id_line() + "\n";
              }
              watch.from = page.next;
              replayed = !page.more;
            } catch (...) {
              out += failure_event(std::current_exception(), watch.part);
              watch.failed = true;
            }
          }
        }
        if (overflowed) {
          error = asio::error::operation_aborted;
          break;
        }
        const std::size_t taken_bytes = taken.size();
        std::string text = std::move(taken) + out;
        out.clear();
        stream.expires_after(options.read_timeout);
        auto [ec, written] = co_await asio::async_write(stream, asio::buffer(text), use_tuple);
        channel->written(taken_bytes);
        if (ec || connection.stopping) {
          error = ec ? ec : beast::error_code(asio::error::operation_aborted);
          break;
        }
        if (watch.failed || replayed) break;
      }
      if (error || watch.failed) continue;
      auto queue = std::make_shared<detail::SubscriptionQueue<Change>>(
          [channel, change_message, w, part = watch.part](const Change& change) {
            channel->push_built([&] { return change_message(w, part, change); });
          });
      memory->watch(watch.prefix, watch.from, queue);
      try {
        queue->ready().get();
        subscriptions.push_back(std::move(queue));
      } catch (...) {
        out += failure_event(std::current_exception(), watch.part);
        watch.failed = true;
      }
    }
    const bool ended = std::all_of(watches.begin(), watches.end(), [](const Watched& w) { return w.failed; }) &&
                       watches.size() == what.parts.size();
    if (!error) co_await forward(connection, *channel, std::move(out), ended);
    queue_budget->remove(channel.get());
    channel->cut_off();  // what is still queued is given back; later deliveries are dropped
    channel->stream = nullptr;
    connection.channel.reset();
    for (auto& subscription : subscriptions) subscription->cancel();
    --subscribers;
  }

  // ---------------------------------------------------------------------------------------------
  void start() {
    std::lock_guard lock(lifecycle);
    if (started) throw Error("scale::StoreServer::start: already started");
    tcp::resolver resolver(ioc);
    beast::error_code ec;
    auto results = resolver.resolve(options.host, std::to_string(options.port), ec);
    if (ec || results.empty())
      throw Error("scale::StoreServer: cannot resolve host '" + options.host + "': " + ec.message());
    tcp::endpoint endpoint = results.begin()->endpoint();
    max_connections = std::min(options.max_connections, descriptor_budget());
    if (max_connections < options.max_connections)
      detail::log_error("scale-store: serving at most " + std::to_string(max_connections) +
                        " connections, below --max-connections " + std::to_string(options.max_connections) +
                        ": the descriptor limit (ulimit -n) leaves room for no more beside a reserve of " +
                        std::to_string(descriptor_reserve) + " for the log and snapshots; raise it to allow more");
    if (spare_descriptor < 0) spare_descriptor = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (!endpoint.address().is_loopback() && options.token.empty())
      throw Error("scale::StoreServer: refusing to listen on " + options.host +
                  " without a token: anyone who can reach that address could read and change the store. "
                  "Pass --token T (clients then send 'Authorization: Bearer T') or bind 127.0.0.1");
    // The acceptor has its own strand: the listener runs on it and stop() closes it there.
    acceptor.emplace(asio::make_strand(ioc));
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      throw Error("scale::StoreServer: cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " +
                  ec.message() + " (is another scale-store running? try another --port)");
    bound_port = acceptor->local_endpoint().port();
    asio::co_spawn(acceptor->get_executor(), listen(), [this](std::exception_ptr error) {
      if (error) detail::log_error("scale-store: the listener stopped with an error");
      listener_ended.set_value();
    });
    // Every context exists before any thread runs (the listener reads the list).
    for (unsigned i = 1; i < std::max(1u, options.io_threads); ++i) {
      more_contexts.push_back(std::make_unique<asio::io_context>(1));
      keep_running.push_back(asio::make_work_guard(*more_contexts.back()));
    }
    completion_threads.push_back(std::make_unique<IoCompletionThread>(ioc));
    for (auto& context : more_contexts) completion_threads.push_back(std::make_unique<IoCompletionThread>(*context));
    auto serve = [](asio::io_context& context, detail::CompletionThread* completions) {
      detail::CompletionThread::set_current(completions);
      context.run();
      detail::CompletionThread::set_current(nullptr);
    };
    threads.emplace_back([this, serve] { serve(ioc, completion_threads[0].get()); });
    for (std::size_t i = 0; i < more_contexts.size(); ++i)
      threads.emplace_back([this, serve, i] { serve(*more_contexts[i], completion_threads[i + 1].get()); });
    started = true;
  }

  void stop() {
    std::lock_guard lock(lifecycle);
    if (!started || stopped) return;
    stopped = true;
    stopping = true;
    asio::post(acceptor->get_executor(), [this] {
      beast::error_code ignored;
      acceptor->close(ignored);
    });
    if (listener_ended.get_future().wait_for(std::chrono::seconds(5)) != std::future_status::ready)
      detail::log_error("scale-store: the listener did not end within 5 s of stop()");
    {
      std::lock_guard connections_lock(connections_mutex);
      for (auto& [id, connection] : connections)
        asio::post(connection->stream.get_executor(), [connection] {
          connection->stopping = true;
          if (connection->channel) connection->channel->timer.cancel();
          if (connection->idle) {
            beast::error_code ignored;
            connection->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
            connection->stream.socket().close(ignored);
          }
        });
    }
    {
      // Requests in flight finish; a client that takes longer is cut off.
      std::unique_lock connections_lock(connections_mutex);
      connections_idle.wait_for(connections_lock, std::chrono::seconds(5), [&] { return connections.empty(); });
    }
    ioc.stop();
    for (auto& context : more_contexts) context->stop();
    for (auto& thread : threads) thread.join();
    threads.clear();
    for (auto& completions : completion_threads) completions->stopped();
    if (log) log->close();  // writes and fsyncs what is pending, unlocks the data directory
    if (spare_descriptor >= 0) ::close(spare_descriptor);
    spare_descriptor = -1;
    std::lock_guard connections_lock(connections_mutex);
    connections.clear();
  }
};

StoreServer::StoreServer(StoreServerOptions options) : m_impl(std::make_shared<Impl>(std::move(options))) {}

StoreServer::~StoreServer() { stop(); }

void StoreServer::start() { m_impl->start(); }

std::uint16_t StoreServer::port() const noexcept { return m_impl->bound_port.load(); }

void StoreServer::stop() { m_impl->stop(); }

}  // namespace scale
