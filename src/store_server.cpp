// scale::StoreServer: the in-process SharedMemory and SharedEventEmitter backends served over
// HTTP/1.1 with Boost.Beast, written as a few small coroutines (listen, session, handle_request,
// stream_events) on the server's own io_context. The store logic is the in-process backend's; this
// file only speaks HTTP.

#include <scale/store_server.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
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

#include <scale/detail/event_backend.hpp>
#include <scale/detail/memory_backend.hpp>
#include <scale/detail/store_log.hpp>
#include <scale/error.hpp>

namespace scale {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// NOTE: a compiler issue. Clang (seen with 16) takes the address of a thread_local as constant
// within a function, so in a coroutine it may compute it once (e.g. hoisted out of a loop) and
// reuse it after a co_await, though the coroutine may resume on another I/O thread. Each
// co_await of an operation or of another coroutine allocates a frame from Asio's per-thread
// cache, found through a thread_local; with the stale address this thread took blocks from
// another thread's cache while that thread used it too, corrupting the heap (seen as a crash
// writing a response). The coroutines here are therefore left unoptimized under Clang: nothing
// is inlined into them or hoisted, so each allocation reads the thread_local where it runs.
#if defined(__clang__)
#define SCALE_COROUTINE [[clang::optnone]]
#else
#define SCALE_COROUTINE
#endif

constexpr std::size_t header_limit = 8 * 1024;
constexpr int max_json_depth = 64;

/// A request that cannot be answered with 200: handle_request throws it, the session answers it.
struct HttpError {
  http::status status;
  std::string message;
};

[[noreturn]] void fail(http::status status, std::string message) { throw HttpError{status, std::move(message)}; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// Percent-decodes `text` ('+' is a space in a query); nullopt for a malformed escape.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      int high = hex_value(text[i + 1]), low = hex_value(text[i + 2]);
      if (high < 0 || low < 0) return std::nullopt;
      out.push_back(static_cast<char>(high * 16 + low));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

/// The request target split into its decoded path and query parameters.
struct Target {
  std::string_view raw_path;
  std::map<std::string, std::string> query;
};

Target parse_target(std::string_view target) {
  Target result;
  auto question = target.find('?');
  result.raw_path = target.substr(0, question);
  if (question == std::string_view::npos) return result;
  std::string_view rest = target.substr(question + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    auto name = percent_decode(pair.substr(0, eq), true);
    auto value = percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
    if (!name || !value)
      fail(http::status::bad_request, "the query string has a malformed percent escape (use %XX with two hex digits)");
    result.query.emplace(std::move(*name), std::move(*value));
  }
  return result;
}

/// The decoded path after `prefix` (a key or an event name, which may contain '/').
std::string path_name(std::string_view raw_path, std::string_view prefix, std::string_view what) {
  auto decoded = percent_decode(raw_path.substr(prefix.size()), false);
  if (!decoded)
    fail(http::status::bad_request, "the " + std::string(what) +
                                        " in the path has a malformed percent escape (use %XX with two hex digits)");
  if (decoded->empty()) fail(http::status::bad_request, "the " + std::string(what) + " in the path is empty");
  return std::move(*decoded);
}

/// Nesting depth of a JSON text, counting brackets outside strings; stops counting past `limit`.
bool nesting_within(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

/// The body as JSON whatever the Content-Type says (curl's -d says form-urlencoded).
json parse_body(const Request& request) {
  const std::string& body = request.body();
  if (body.find_first_not_of(" \t\r\n") == std::string::npos)
    fail(http::status::bad_request, "the body is empty; send a JSON value");
  if (!nesting_within(body, max_json_depth))
    fail(http::status::bad_request,
         "the body's JSON is nested deeper than " + std::to_string(max_json_depth) + " levels");
  try {
    return json::parse(body);
  } catch (const json::exception& error) {  // parse_error, or out_of_range for a number too large
    fail(http::status::bad_request, std::string("the body is not valid JSON: ") + error.what());
  }
}

/// A revision from a header or query value: digits, optionally quoted (an ETag) or weak (W/).
std::optional<Revision> parse_revision(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  if (text.starts_with("W/")) text.remove_prefix(2);
  if (text.size() >= 2 && text.front() == '"' && text.back() == '"') text = text.substr(1, text.size() - 2);
  Revision value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty() || value < 0) return std::nullopt;
  return value;
}

/// Compares in time that depends only on the lengths, so a token cannot be guessed byte by byte.
bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

json entry_json(const Entry& entry) {
  return {{"key", entry.key}, {"value", entry.value}, {"revision", entry.revision}, {"timestamp_ms", entry.timestamp_ms}};
}

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

/// What an SSE subscription's handler (on any thread) hands to the connection writing it out.
/// NOTE: `pending` and `overflowed` are guarded by `mutex`; `timer` and `stream` belong to the
/// connection's strand, so a handler only posts to the strand to wake the writer.
struct SseChannel : std::enable_shared_from_this<SseChannel> {
  SseChannel(asio::any_io_executor executor, std::size_t limit) : timer(std::move(executor)), limit(limit) {}

  /// Any thread: queue `text`; past the limit the subscriber is cut off instead.
  void push(std::string text) {
    {
      std::lock_guard lock(mutex);
      if (overflowed) return;
      if (pending.size() + text.size() > limit) {
        overflowed = true;
        pending.clear();
      } else {
        pending += text;
      }
    }
    asio::post(timer.get_executor(), [self = shared_from_this()] { self->wake(); });
  }

  /// Strand only: wakes the writer; an overflowed subscriber's socket is closed, since its writer
  /// may be stuck in a write the client never reads.
  void wake() {
    timer.cancel();
    bool cut_off;
    {
      std::lock_guard lock(mutex);
      cut_off = overflowed;
    }
    if (cut_off && stream) {
      beast::error_code ignored;
      stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
      stream->socket().close(ignored);
    }
  }

  asio::steady_timer timer;
  beast::tcp_stream* stream = nullptr;  // strand only; null once the connection stops writing
  std::mutex mutex;
  std::string pending;
  bool overflowed = false;
  const std::size_t limit;
};

/// One accepted connection; every member is touched on its strand only.
struct Connection {
  explicit Connection(tcp::socket socket) : stream(std::move(socket)) {}
  beast::tcp_stream stream;
  bool idle = false;    // waiting for the next request's headers
  bool stopping = false;
  std::chrono::steady_clock::time_point request_started;  // for the latency histogram
  std::shared_ptr<SseChannel> channel;  // while streaming events
};

/// Requests by endpoint and status, for /metrics.
class RequestCounts {
 public:
  void add(std::string_view endpoint, unsigned status) {
    std::lock_guard lock(m_mutex);
    ++m_counts[{std::string(endpoint), status}];
  }
  /// One answered request's time from its headers read to its answer written.
  void observe(std::chrono::steady_clock::duration elapsed) {
    double seconds = std::chrono::duration<double>(elapsed).count();
    std::lock_guard lock(m_mutex);
    for (std::size_t i = 0; i < latency_bounds.size(); ++i)
      if (seconds <= latency_bounds[i]) ++m_buckets[i];
    ++m_observed;
    m_latency_sum += seconds;
  }

  std::string render() {
    std::string out = "# HELP scale_store_requests_total Requests answered, by endpoint and status.\n"
                      "# TYPE scale_store_requests_total counter\n";
    std::lock_guard lock(m_mutex);
    for (const auto& [labels, count] : m_counts)
      out += "scale_store_requests_total{endpoint=\"" + labels.first + "\",status=\"" +
             std::to_string(labels.second) + "\"} " + std::to_string(count) + "\n";
    out += "# HELP scale_store_request_duration_seconds Time from a request's headers to its answer written.\n"
           "# TYPE scale_store_request_duration_seconds histogram\n";
    for (std::size_t i = 0; i < latency_bounds.size(); ++i) {
      char bound[32];
      std::snprintf(bound, sizeof bound, "%g", latency_bounds[i]);
      out += "scale_store_request_duration_seconds_bucket{le=\"" + std::string(bound) + "\"} " +
             std::to_string(m_buckets[i]) + "\n";
    }
    out += "scale_store_request_duration_seconds_bucket{le=\"+Inf\"} " + std::to_string(m_observed) + "\n";
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.9f", m_latency_sum);
    out += "scale_store_request_duration_seconds_sum " + std::string(sum) + "\n";
    out += "scale_store_request_duration_seconds_count " + std::to_string(m_observed) + "\n";
    return out;
  }

 private:
  static constexpr std::array<double, 10> latency_bounds{0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                         0.005,  0.01,    0.05,   0.25,  1.0};
  std::mutex m_mutex;
  std::map<std::pair<std::string, unsigned>, std::uint64_t> m_counts;
  std::array<std::uint64_t, latency_bounds.size()> m_buckets{};
  std::uint64_t m_observed = 0;
  double m_latency_sum = 0;
};

/// What handle_request decided for an SSE endpoint: the session streams it after the headers.
struct StreamRequest {
  bool watch = false;  // else: events
  std::string prefix_or_name;
  Revision from = 0;
};

std::string_view endpoint_of(http::verb method, std::string_view path) {
  if (path == "/healthz") return "healthz";
  if (path == "/metrics") return "metrics";
  if (path == "/v1/kv") return method == http::verb::post ? "kv_set_many" : "kv_list";
  if (path.starts_with("/v1/kv/")) {
    switch (method) {
      case http::verb::get: return "kv_get";
      case http::verb::put: return "kv_put";
      case http::verb::delete_: return "kv_delete";
      default: return "kv_other";
    }
  }
  if (path.starts_with("/v1/increment/")) return "increment";
  if (path == "/v1/watch") return "watch";
  if (path.starts_with("/v1/events/")) return method == http::verb::post ? "events_emit" : "events_stream";
  return "unknown";
}

}  // namespace

struct StoreServer::Impl : std::enable_shared_from_this<Impl> {
  explicit Impl(StoreServerOptions options)
      : options(std::move(options)),
        memory(open_memory(this->options, log)),
        events(detail::make_in_process_events()),
        ioc(static_cast<int>(std::max(1u, this->options.io_threads))) {}

  /// The store's memory; with a data_dir, recovered from it and journaled to `log`.
  static std::shared_ptr<detail::MemoryBackend> open_memory(const StoreServerOptions& options,
                                                            std::shared_ptr<detail::StoreLog>& log) {
    detail::InProcessMemoryOptions memory_options{.history = options.history};
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
  std::shared_ptr<detail::EventBackend> events;
  asio::io_context ioc;
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  std::atomic<std::uint16_t> bound_port{0};
  std::mutex lifecycle;  // start/stop
  bool started = false, stopped = false;

  RequestCounts counts;
  std::atomic<std::int64_t> subscribers{0};

  // Open connections and how to close each (posted to its strand) at stop().
  std::mutex connections_mutex;
  std::condition_variable connections_idle;
  std::unordered_map<std::uint64_t, std::shared_ptr<Connection>> connections;
  std::uint64_t next_connection = 0;
  std::atomic<bool> stopping{false};

  // ---------------------------------------------------------------------------------------------
  SCALE_COROUTINE asio::awaitable<void> listen() {
    for (;;) {
      auto [ec, socket] = co_await acceptor->async_accept(asio::make_strand(ioc), use_tuple);
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) co_return;
        // e.g. EMFILE: pause briefly rather than spin, then take the next connection.
        asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(50));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      if (stopping) co_return;
      auto connection = std::make_shared<Connection>(tcp::socket(std::move(socket)));
      std::uint64_t id;
      bool over_cap;
      {
        std::lock_guard lock(connections_mutex);
        over_cap = connections.size() >= options.max_connections;
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

  template <class Message>
  Response make_response(const Message& request, http::status status, std::string body,
                         std::string_view content_type = "application/json") {
    Response response{status, request.version()};
    response.set(http::field::server, "scale-store");
    response.set(http::field::content_type, content_type);
    if (!options.cors_origin.empty()) response.set(http::field::access_control_allow_origin, options.cors_origin);
    response.keep_alive(request.keep_alive());
    response.body() = std::move(body);
    response.prepare_payload();
    return response;
  }

  template <class Message>
  Response error_response(const Message& request, http::status status, std::string_view message) {
    return make_response(request, status, json{{"error", message}}.dump() + "\n");
  }

  /// One more than the cap: answered 503 and closed.
  SCALE_COROUTINE asio::awaitable<void> refuse(std::shared_ptr<Connection> connection) {
    Request request{http::verb::get, "/", 11};
    auto response = error_response(request, http::status::service_unavailable,
                                   "the server has reached its connection limit (" +
                                       std::to_string(options.max_connections) + "); try again later");
    response.keep_alive(false);
    connection->stream.expires_after(std::chrono::seconds(1));
    co_await http::async_write(connection->stream, response, use_tuple);
    beast::error_code ignored;
    connection->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    counts.add("refused", 503);
  }

  SCALE_COROUTINE asio::awaitable<bool> write(Connection& connection, Response& response,
                                              std::string_view endpoint) {
    counts.add(endpoint, response.result_int());
    connection.stream.expires_after(options.read_timeout);
    auto [ec, n] = co_await http::async_write(connection.stream, response, use_tuple);
    counts.observe(std::chrono::steady_clock::now() - connection.request_started);
    co_return !ec;
  }

  // ---------------------------------------------------------------------------------------------
  SCALE_COROUTINE asio::awaitable<void> session(std::shared_ptr<Connection> connection) {
    auto& stream = connection->stream;
    beast::flat_buffer buffer;
    bool unread_input = false;  // closing after an error while the client may still be sending
    while (!connection->stopping && !stopping) {
      http::request_parser<http::empty_body> head;
      head.header_limit(header_limit);
      // The body's size is judged below from Content-Length, to answer 413 rather than fail.
      head.body_limit(std::numeric_limits<std::uint64_t>::max());
      stream.expires_after(options.header_timeout);
      connection->idle = true;
      auto [read_error, n] = co_await http::async_read_header(stream, buffer, head, use_tuple);
      connection->idle = false;
      connection->request_started = std::chrono::steady_clock::now();
      if (read_error == http::error::header_limit) {
        Request request{http::verb::get, "/", 11};
        auto response = error_response(request, http::status::request_header_fields_too_large,
                                       "the request's headers exceed " + std::to_string(header_limit) + " bytes");
        response.keep_alive(false);
        co_await write(*connection, response, "unknown");
        unread_input = true;
        break;
      }
      if (read_error) {
        if (read_error.category() == make_error_code(http::error::bad_method).category() &&
            read_error != http::error::end_of_stream && read_error != http::error::partial_message) {
          Request request{http::verb::get, "/", 11};
          auto response = error_response(request, http::status::bad_request,
                                         "malformed HTTP request: " + read_error.message());
          response.keep_alive(false);
          co_await write(*connection, response, "unknown");
        }
        break;  // closed, timed out (slowloris), or unparseable
      }

      auto& peek = head.get();
      Target target;
      std::string_view endpoint = endpoint_of(peek.method(), peek.target().substr(0, peek.target().find('?')));
      bool body_pending = !head.is_done();
      std::optional<Response> early;
      try {
        target = parse_target(peek.target());
        if (auto problem = check_access(peek, target, endpoint)) early = std::move(*problem);
      } catch (const HttpError& error) {
        early = error_response(peek, error.status, error.message);
      }
      if (!early && head.content_length() && *head.content_length() > options.max_body)
        early = error_response(peek, http::status::payload_too_large,
                               "the body has " + std::to_string(*head.content_length()) +
                                   " bytes; the limit is " + std::to_string(options.max_body) +
                                   " (scale-store --max-body)");
      if (early) {
        if (body_pending) early->keep_alive(false);  // the body is never read
        unread_input = body_pending;
        bool ok = co_await write(*connection, *early, endpoint);
        if (!ok || !early->keep_alive()) break;
        continue;
      }
      if (body_pending && beast::iequals(peek[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, 11};
        stream.expires_after(options.read_timeout);
        auto [ec, written] = co_await http::async_write(stream, go_on, use_tuple);
        if (ec) break;
      }

      http::request_parser<http::string_body> parser{std::move(head)};
      parser.body_limit(options.max_body);
      if (!parser.is_done()) {
        stream.expires_after(options.read_timeout);
        auto [ec, read] = co_await http::async_read(stream, buffer, parser, use_tuple);
        if (ec == http::error::body_limit) {
          auto response = error_response(parser.get(), http::status::payload_too_large,
                                         "the body exceeds the limit of " + std::to_string(options.max_body) +
                                             " bytes (scale-store --max-body)");
          response.keep_alive(false);
          co_await write(*connection, response, endpoint);
          unread_input = true;
          break;
        }
        if (ec) break;
      }
      Request request = parser.release();

      std::optional<StreamRequest> stream_request;
      Response response;
      try {
        response = handle_request(request, target, stream_request);
      } catch (const HttpError& error) {
        response = error_response(request, error.status, error.message);
      } catch (const Compacted& error) {
        response = error_response(request, http::status::gone, error.what());
      } catch (const TypeMismatch& error) {
        response = error_response(request, http::status::conflict, error.what());
      } catch (const Error& error) {  // e.g. an increment that overflows
        response = error_response(request, http::status::conflict, error.what());
      } catch (const std::exception& error) {
        response = error_response(request, http::status::internal_server_error, error.what());
      }
      if (stream_request) {
        co_await stream_events(*connection, request, *stream_request, endpoint);
        break;  // an event stream ends its connection
      }
      if (connection->stopping) response.keep_alive(false);
      bool ok = co_await write(*connection, response, endpoint);
      if (!ok || !response.keep_alive()) break;
    }
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

  /// CORS preflight and the token; an answer when the request must stop here.
  template <class Message>
  std::optional<Response> check_access(const Message& request, const Target& target, std::string_view endpoint) {
    if (request.method() == http::verb::options && !options.cors_origin.empty()) {
      auto response = make_response(request, http::status::no_content, "");
      response.set(http::field::access_control_allow_methods, "GET, PUT, POST, DELETE, OPTIONS");
      response.set(http::field::access_control_allow_headers,
                   "Authorization, Content-Type, If-Match, If-None-Match, Last-Event-ID");
      response.set(http::field::access_control_max_age, "600");
      return response;
    }
    if (options.token.empty() || endpoint == "healthz") return std::nullopt;
    std::string_view authorization = request[http::field::authorization];
    bool ok = false;
    if (authorization.starts_with("Bearer ")) ok = constant_time_equal(authorization.substr(7), options.token);
    if (!ok && (endpoint == "watch" || endpoint == "events_stream")) {
      auto found = target.query.find("token");
      if (found != target.query.end()) ok = constant_time_equal(found->second, options.token);
    }
    if (ok) return std::nullopt;
    auto response = error_response(request, http::status::unauthorized,
                                   authorization.empty()
                                       ? "this server requires a token: send 'Authorization: Bearer <token>'"
                                       : "the token is wrong");
    response.set(http::field::www_authenticate, "Bearer");
    return response;
  }

  // ---------------------------------------------------------------------------------------------
  /// Answers one request from the store; for an SSE endpoint fills `stream` instead.
  Response handle_request(const Request& request, const Target& target, std::optional<StreamRequest>& stream) {
    const std::string_view path = target.raw_path;
    const auto method = request.method();
    auto ok = [&](const json& body) { return make_response(request, http::status::ok, body.dump() + "\n"); };
    auto only = [&](std::initializer_list<http::verb> allowed) {
      if (std::find(allowed.begin(), allowed.end(), method) == allowed.end())
        fail(http::status::method_not_allowed,
             "method " + std::string(request.method_string()) + " is not allowed on " + std::string(path));
    };

    if (path == "/healthz") {
      only({http::verb::get});
      return ok({{"status", "ok"}});
    }
    if (path == "/metrics") {
      only({http::verb::get});
      return make_response(request, http::status::ok, metrics(), "text/plain; version=0.0.4");
    }
    if (path == "/v1/kv") {
      only({http::verb::get, http::verb::post});
      if (method == http::verb::post) {
        json object = parse_body(request);
        if (!object.is_object()) fail(http::status::bad_request, "POST /v1/kv needs a JSON object of keys to set");
        for (const auto& [key, value] : object.items())
          if (key.empty()) fail(http::status::bad_request, "a key of the object is empty");
        return ok({{"revision", memory->set_many(std::move(object)).get()}});
      }
      auto found = target.query.find("prefix");
      json entries = json::array();
      for (const auto& entry : memory->list(found == target.query.end() ? "" : found->second).get())
        entries.push_back(entry_json(entry));
      return ok(entries);
    }
    if (path.starts_with("/v1/kv/")) {
      std::string key = path_name(path, "/v1/kv/", "key");
      if (method == http::verb::get) {
        auto entry = memory->entry(key).get();
        if (!entry) fail(http::status::not_found, "key '" + key + "' not found");
        auto response = ok(entry_json(*entry));
        response.set(http::field::etag, "\"" + std::to_string(entry->revision) + "\"");
        return response;
      }
      if (method == http::verb::delete_) {
        if (!memory->erase(key).get()) fail(http::status::not_found, "key '" + key + "' not found");
        return ok({{"deleted", key}});
      }
      only({http::verb::put});
      json value = parse_body(request);
      auto if_match = request.find(http::field::if_match);
      auto if_none_match = request.find(http::field::if_none_match);
      if (if_match != request.end() && if_none_match != request.end())
        fail(http::status::bad_request, "send If-Match or If-None-Match, not both");
      std::optional<Revision> expected;
      if (if_none_match != request.end()) {
        if (if_none_match->value() != "*")
          fail(http::status::bad_request, "If-None-Match accepts only '*' (write only when the key is absent)");
        expected = 0;
      } else if (if_match != request.end()) {
        if (if_match->value() == "*") {
          auto entry = memory->entry(key).get();
          if (!entry) fail(http::status::precondition_failed, "key '" + key + "' is absent (If-Match: *)");
          expected = entry->revision;
        } else {
          expected = parse_revision(if_match->value());
          if (!expected || *expected == 0)
            fail(http::status::bad_request, "If-Match needs a revision, e.g. If-Match: 42 or If-Match: \"42\"");
        }
      }
      if (!expected) return ok({{"revision", memory->set_many(json{{key, std::move(value)}}).get()}});
      Revision written = memory->compare_and_set_revision(key, *expected, std::move(value)).get();
      if (written == 0) {
        auto current = memory->entry(key).get();
        fail(http::status::precondition_failed,
             "key '" + key + "' " +
                 (current ? "is at revision " + std::to_string(current->revision) : std::string("is absent")) +
                 (*expected == 0 ? ", not absent" : ", not " + std::to_string(*expected)));
      }
      return ok({{"revision", written}});
    }
    if (path.starts_with("/v1/increment/")) {
      only({http::verb::post});
      std::string key = path_name(path, "/v1/increment/", "key");
      std::int64_t by = 1;
      if (request.body().find_first_not_of(" \t\r\n") != std::string::npos) {
        json body = parse_body(request);
        if (!body.is_object()) fail(http::status::bad_request, "the body must be an object like {\"by\": 1}");
        if (body.contains("by")) {
          const json& amount = body["by"];
          if (!amount.is_number_integer() ||
              (amount.is_number_unsigned() && !std::in_range<std::int64_t>(amount.get<std::uint64_t>())))
            fail(http::status::bad_request, "\"by\" must be a 64-bit integer, not " + amount.dump());
          by = amount.get<std::int64_t>();
        }
      }
      auto done = memory->increment_with_revision(key, by).get();
      return ok({{"value", done.value}, {"revision", done.revision}});
    }
    if (path == "/v1/watch") {
      only({http::verb::get});
      StreamRequest watch{true, "", 0};
      if (auto found = target.query.find("prefix"); found != target.query.end()) watch.prefix_or_name = found->second;
      if (auto found = target.query.find("from"); found != target.query.end()) {
        auto from = parse_revision(found->second);
        if (!from) fail(http::status::bad_request, "'from' must be a revision (an integer >= 0), not '" + found->second + "'");
        watch.from = *from;
      }
      if (auto last = request.find("Last-Event-ID"); last != request.end()) {
        auto seen = parse_revision(last->value());
        if (!seen) fail(http::status::bad_request, "Last-Event-ID must be a revision (an integer >= 0)");
        watch.from = *seen + 1;
      }
      stream = std::move(watch);
      return {};
    }
    if (path.starts_with("/v1/events/")) {
      std::string name = path_name(path, "/v1/events/", "event name");
      if (method == http::verb::post) {
        json payload = request.body().find_first_not_of(" \t\r\n") == std::string::npos ? json(nullptr)
                                                                                         : parse_body(request);
        emit(std::move(name), std::move(payload));
        return ok({{"emitted", true}});
      }
      only({http::verb::get});
      stream = StreamRequest{false, std::move(name), 0};
      return {};
    }
    fail(http::status::not_found, "no such endpoint: " + std::string(path) + " (see docs/http-api.md)");
  }

  void emit(std::string name, json payload) { events->emit(std::move(name), std::move(payload)).get(); }

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
    gauge("scale_store_keys", "Keys in the store.", static_cast<std::int64_t>(memory->list("").get().size()));
    gauge("scale_store_revision", "The store's latest revision.", memory->set_many(json::object()).get());
    gauge("scale_store_connections", "Open connections.", open);
    gauge("scale_store_subscribers", "Open watch and event streams.", subscribers.load());
    out += "# HELP scale_store_fsyncs_total fsync calls on the data directory's log.\n"
           "# TYPE scale_store_fsyncs_total counter\nscale_store_fsyncs_total " +
           std::to_string(log ? log->fsyncs() : 0) + "\n";
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  /// Writes the SSE headers, subscribes, and forwards what the subscription delivers until the
  /// client goes away, the server stops, or the subscriber falls 'max_subscriber_queue' behind.
  SCALE_COROUTINE asio::awaitable<void> stream_events(Connection& connection, const Request& request,
                                                      const StreamRequest& what, std::string_view endpoint) {
    auto& stream = connection.stream;
    auto channel = std::make_shared<SseChannel>(stream.get_executor(), options.max_subscriber_queue);
    channel->stream = &stream;
    connection.channel = channel;

    std::shared_ptr<detail::SubscriptionState> subscription;
    std::string first;  // a compacted watch answers with one event and ends
    if (what.watch) {
      auto queue = std::make_shared<detail::SubscriptionQueue<Change>>([channel](const Change& change) {
        json data{{"key", change.key},
                  {"value", change.value},
                  {"revision", change.revision},
                  {"timestamp_ms", change.timestamp_ms},
                  {"erased", change.erased}};
        channel->push(sse_event(data.dump(), change.revision));
      });
      memory->watch(what.prefix_or_name, what.from, queue);
      try {
        queue->ready().get();
        subscription = queue;
      } catch (const Compacted& error) {
        first = sse_event(json{{"error", error.what()}, {"requested", error.requested()},
                               {"oldest_kept", error.oldest_kept()}}
                              .dump(),
                          std::nullopt, "compacted");
      } catch (const std::exception& error) {
        first = sse_event(json{{"error", error.what()}}.dump(), std::nullopt, "error");
      }
    } else {
      auto queue = std::make_shared<detail::SubscriptionQueue<json>>(
          [channel](const json& payload) { channel->push(sse_event(payload.dump())); });
      events->subscribe(what.prefix_or_name, queue);
      queue->ready().get();
      subscription = queue;
    }
    if (subscription) ++subscribers;

    http::response<http::empty_body> head{http::status::ok, request.version()};
    head.set(http::field::server, "scale-store");
    head.set(http::field::content_type, "text/event-stream");
    head.set(http::field::cache_control, "no-cache");
    if (!options.cors_origin.empty()) head.set(http::field::access_control_allow_origin, options.cors_origin);
    head.keep_alive(true);
    head.chunked(false);
    counts.add(endpoint, 200);
    http::response_serializer<http::empty_body> serializer{head};
    stream.expires_after(options.read_timeout);
    auto [head_error, n] = co_await http::async_write_header(stream, serializer, use_tuple);

    // The ": ready" comment tells a client its subscription is in place (nothing before it is lost).
    std::string out = first.empty() ? std::string(": ready\n\n") : first;
    bool ended = !first.empty();
    while (!head_error && !connection.stopping) {
      if (out.empty()) {
        bool overflowed;
        {
          std::lock_guard lock(channel->mutex);
          out.swap(channel->pending);
          overflowed = channel->overflowed;
        }
        if (overflowed) break;
      }
      if (out.empty()) {
        if (ended) break;
        channel->timer.expires_after(options.sse_heartbeat);
        auto [wait_error] = co_await channel->timer.async_wait(use_tuple);
        if (wait_error) continue;  // woken: something to send (or stopping)
        out = ": keep-alive\n\n";
      }
      stream.expires_after(options.read_timeout);
      auto [ec, written] = co_await asio::async_write(stream, asio::buffer(out), use_tuple);
      if (ec) break;
      out.clear();
    }
    channel->stream = nullptr;
    connection.channel.reset();
    if (subscription) {
      subscription->cancel();
      --subscribers;
    }
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
      throw Error("scale::StoreServer: cannot listen on " + options.host + ":" + std::to_string(options.port) +
                  ": " + ec.message() + " (is another scale-store running? try another --port)");
    bound_port = acceptor->local_endpoint().port();
    asio::co_spawn(acceptor->get_executor(), listen(), [](std::exception_ptr error) {
      if (error) detail::log_error("scale-store: the listener stopped with an error");
    });
    for (unsigned i = 0; i < std::max(1u, options.io_threads); ++i) threads.emplace_back([this] { ioc.run(); });
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
    for (auto& thread : threads) thread.join();
    threads.clear();
    if (log) log->close();  // writes and fsyncs what is pending, unlocks the data directory
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
