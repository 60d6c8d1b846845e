// The HTTP/1.1 client of scale-store on Beast: one I/O thread, one keep-alive connection for
// requests (served in order, reconnected when it drops), and one connection per SSE stream
// (reconnected with backoff).

#include <scale/detail/http_client.hpp>

#include <scale/error.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/as_tuple.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

namespace scale::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

std::string hint(const HttpUrl& url) {
  return "; is the store server running? Start it with `scale-store --port " + url.port +
         "` (or embed scale::StoreServer)";
}

}  // namespace

HttpUrl parse_http_url(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Error("scale: \"" + text + "\" is not a valid store URL (" + why +
                 "); use \"http://host:port\", optionally with \"?token=T\"");
  };
  const std::string scheme = "http://";
  if (text.rfind(scheme, 0) != 0) throw bad("it must start with http://");
  HttpUrl url;
  url.text = text;
  std::string rest = text.substr(scheme.size());
  std::string query;
  if (auto q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size()) throw bad("host and port are required");
  url.host = rest.substr(0, colon);
  url.port = rest.substr(colon + 1);
  if (url.host.front() == '[' && url.host.back() == ']') url.host = url.host.substr(1, url.host.size() - 2);
  if (!std::all_of(url.port.begin(), url.port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw bad("the port must be a number");
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string pair = query.substr(0, amp);
    query = amp == std::string::npos ? std::string{} : query.substr(amp + 1);
    auto eq = pair.find('=');
    std::string name = pair.substr(0, eq);
    std::string value = eq == std::string::npos ? std::string{} : pair.substr(eq + 1);
    if (name == "token") url.token = value;
    else throw bad("unknown option '" + name + "'");
  }
  return url;
}

std::string percent_encode(const std::string& text, bool keep_slash) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
  return out;
}

struct HttpClient::Impl : std::enable_shared_from_this<Impl> {
  struct Pending {
    http::request<http::string_body> request;
    HttpClient::Done done;
  };

  explicit Impl(HttpUrl u) : url(std::move(u)), work(asio::make_work_guard(io)) {}

  HttpUrl url;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
  std::atomic<bool> stopping{false};

  // I/O thread only.
  std::deque<Pending> queue;
  bool running = false;
  std::optional<beast::tcp_stream> connection;
  int holds = 0;
  std::optional<asio::steady_timer> hold_timer;
  std::vector<std::shared_ptr<beast::tcp_stream>> streams;

  std::exception_ptr connection_error(const std::string& what) const {
    return std::make_exception_ptr(
        ConnectionError("scale::ConnectionError: cannot reach the store server at " + url.text + ": " + what + hint(url)));
  }

  asio::awaitable<beast::error_code> connect(beast::tcp_stream& stream) {
    tcp::resolver resolver(io);
    auto [resolve_error, results] = co_await resolver.async_resolve(url.host, url.port, use_tuple);
    if (resolve_error) co_return resolve_error;
    stream.expires_after(std::chrono::seconds(5));
    auto [ec, endpoint] = co_await stream.async_connect(results, use_tuple);
    stream.expires_never();
    if (!ec) stream.socket().set_option(tcp::no_delay(true));
    co_return ec;
  }

  void kick() {
    if (running || queue.empty() || holds > 0) return;
    running = true;
    asio::co_spawn(io, serve(shared_from_this()), asio::detached);
  }

  // NOTE: one request at a time over one connection keeps the order of requests; a request that
  // fails on a kept-alive connection the server closed meanwhile is sent once more on a new one.
  asio::awaitable<void> serve([[maybe_unused]] std::shared_ptr<Impl> self) {
    while (!queue.empty() && holds == 0 && !stopping) {
      Pending pending = std::move(queue.front());
      queue.pop_front();
      std::exception_ptr error;
      HttpResponse answer;
      for (int attempt = 0; attempt < 2; ++attempt) {
        bool reused = connection.has_value();
        if (!connection) {
          connection.emplace(io);
          if (auto ec = co_await connect(*connection)) {
            connection.reset();
            error = connection_error(ec.message());
            break;
          }
        }
        connection->expires_after(std::chrono::seconds(30));
        auto [write_error, w] = co_await http::async_write(*connection, pending.request, use_tuple);
        beast::error_code ec = write_error;
        http::response<http::string_body> response;
        if (!ec) {
          beast::flat_buffer buffer;
          auto [read_error, r] = co_await http::async_read(*connection, buffer, response, use_tuple);
          ec = read_error;
        }
        if (ec) {
          connection.reset();
          error = connection_error(ec.message());
          if (reused) continue;
          break;
        }
        connection->expires_never();
        if (!response.keep_alive()) connection.reset();
        error = nullptr;
        answer.status = static_cast<int>(response.result_int());
        answer.body = std::move(response.body());
        break;
      }
      pending.done(error, std::move(answer));
    }
    running = false;
    kick();
  }

  http::request<http::string_body> make_request(const std::string& method, const std::string& target) const {
    http::request<http::string_body> request{http::string_to_verb(method), target, 11};
    request.set(http::field::host, url.host + ":" + url.port);
    request.set(http::field::user_agent, "scale");
    if (!url.token.empty()) request.set(http::field::authorization, "Bearer " + url.token);
    request.keep_alive(true);
    return request;
  }

  // One stream: connect, send, read the head, parse events; reconnect with backoff after a drop.
  asio::awaitable<void> run_stream([[maybe_unused]] std::shared_ptr<Impl> self, std::shared_ptr<beast::tcp_stream> stream,
                                   std::shared_ptr<std::atomic<bool>> ended, SseHandlers handlers) {
    auto backoff = std::chrono::milliseconds(50);
    bool ever_ready = false;
    while (!*ended && !stopping) {
      bool ready = false;
      std::string failure;
      beast::tcp_stream& s = *stream;
      if (auto ec = co_await connect(s)) {
        failure = ec.message();
      } else {
        auto request = make_request("GET", handlers.target());
        request.set(http::field::accept, "text/event-stream");
        auto [write_error, w] = co_await http::async_write(s, request, use_tuple);
        beast::flat_buffer buffer;
        http::response_parser<http::buffer_body> parser;
        parser.body_limit(boost::none);
        beast::error_code ec2 = write_error;
        if (!ec2) {
          auto [head_error, h] = co_await http::async_read_header(s, buffer, parser, use_tuple);
          ec2 = head_error;
        }
        if (ec2) {
          failure = ec2.message();
        } else if (parser.get().result_int() != 200) {
          // Not a stream: read the (small) error body and give up.
          std::string body;
          char chunk[4096];
          while (!parser.is_done()) {
            parser.get().body().data = chunk;
            parser.get().body().size = sizeof chunk;
            auto [e, n] = co_await http::async_read_some(s, buffer, parser, use_tuple);
            body.append(chunk, sizeof chunk - parser.get().body().size);
            if (e && e != http::error::need_buffer) break;
          }
          if (!*ended)
            handlers.on_error(std::make_exception_ptr(Error(
                "scale: the store server at " + url.text + " refused a stream (" +
                std::to_string(parser.get().result_int()) + "): " + body)));
          co_return;
        } else {
          std::string text;
          SseEvent event;
          char chunk[8192];
          bool stop = false;
          while (!stop && !*ended && !parser.is_done()) {
            parser.get().body().data = chunk;
            parser.get().body().size = sizeof chunk;
            auto [e, n] = co_await http::async_read_some(s, buffer, parser, use_tuple);
            text.append(chunk, sizeof chunk - parser.get().body().size);
            if (e && e != http::error::need_buffer) break;
            std::size_t start = 0;
            for (auto nl = text.find('\n', start); nl != std::string::npos; nl = text.find('\n', start)) {
              std::string line = text.substr(start, nl - start);
              start = nl + 1;
              if (!line.empty() && line.back() == '\r') line.pop_back();
              if (line.empty()) {
                if (!event.data.empty() || !event.event.empty()) {
                  if (!event.data.empty() && event.data.back() == '\n') event.data.pop_back();
                  if (!*ended && !handlers.on_event(event)) stop = true;
                }
                event = {};
                if (stop) break;
              } else if (line[0] == ':') {
                if (line.find("ready") != std::string::npos && !ready) {
                  ready = ever_ready = true;
                  backoff = std::chrono::milliseconds(50);
                  if (!*ended) handlers.on_ready();
                }
              } else {
                auto colon = line.find(':');
                std::string field = line.substr(0, colon);
                std::string value = colon == std::string::npos ? std::string{} : line.substr(colon + 1);
                if (!value.empty() && value[0] == ' ') value.erase(0, 1);
                if (field == "data") event.data += value + "\n";
                else if (field == "id") event.id = value;
                else if (field == "event") event.event = value;
              }
            }
            text.erase(0, start);
          }
          if (stop) co_return;
          failure = "the stream ended";
        }
      }
      beast::error_code ignored;
      s.socket().close(ignored);
      if (*ended || stopping) co_return;
      if (!ever_ready) {
        handlers.on_error(connection_error(failure));
        co_return;
      }
      asio::steady_timer timer(io, backoff);
      co_await timer.async_wait(use_tuple);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    }
  }
};

HttpClient::HttpClient(HttpUrl url) : m_impl(std::make_shared<Impl>(std::move(url))) {
  m_impl->thread = std::thread([impl = m_impl.get()] { impl->io.run(); });
}

HttpClient::~HttpClient() {
  m_impl->stopping = true;
  asio::post(m_impl->io, [impl = m_impl] {
    for (auto& stream : impl->streams) stream->socket().close();
    impl->streams.clear();
    if (impl->connection) impl->connection->socket().close();
    if (impl->hold_timer) impl->hold_timer->cancel();
    for (auto& pending : impl->queue)
      pending.done(std::make_exception_ptr(Error("scale: the store client was closed")), {});
    impl->queue.clear();
    impl->work.reset();
  });
  if (m_impl->thread.joinable()) {
    if (m_impl->thread.get_id() == std::this_thread::get_id()) m_impl->thread.detach();
    else m_impl->thread.join();
  }
}

Future<HttpResponse> HttpClient::request(std::string method, std::string target, std::string body,
                                         std::vector<std::pair<std::string, std::string>> headers) {
  auto promise = std::make_shared<Promise<HttpResponse>>();
  auto future = promise->get_future();
  request(std::move(method), std::move(target), std::move(body), std::move(headers),
          [promise](std::exception_ptr error, HttpResponse response) {
            if (error) promise->set_exception(error);
            else promise->set_value(std::move(response));
          });
  return future;
}

void HttpClient::request(std::string method, std::string target, std::string body,
                         std::vector<std::pair<std::string, std::string>> headers, Done done) {
  Impl::Pending pending{m_impl->make_request(method, target), std::move(done)};
  for (auto& [name, value] : headers) pending.request.set(name, value);
  if (!body.empty()) pending.request.set(http::field::content_type, "application/json");
  pending.request.body() = std::move(body);
  pending.request.prepare_payload();
  asio::post(m_impl->io, [impl = m_impl, pending = std::move(pending)]() mutable {
    impl->queue.push_back(std::move(pending));
    impl->kick();
  });
}

std::function<void()> HttpClient::stream(SseHandlers handlers) {
  auto ended = std::make_shared<std::atomic<bool>>(false);
  auto stream = std::make_shared<beast::tcp_stream>(m_impl->io);
  asio::post(m_impl->io, [impl = m_impl, stream, ended, handlers = std::move(handlers)]() mutable {
    if (*ended) return;
    impl->streams.push_back(stream);
    asio::co_spawn(impl->io, impl->run_stream(impl, stream, ended, std::move(handlers)),
                   [impl, stream](std::exception_ptr error) {
                     std::erase(impl->streams, stream);
                     if (error) {
                       try {
                         std::rethrow_exception(error);
                       } catch (const std::exception& e) {
                         log_error(std::string("scale: an http:// stream ended with an error: ") + e.what());
                       } catch (...) {
                       }
                     }
                   });
  });
  std::weak_ptr<Impl> weak = m_impl;
  return [weak, stream, ended] {
    if (ended->exchange(true)) return;
    if (auto impl = weak.lock()) {
      asio::post(impl->io, [stream] {
        beast::error_code ignored;
        stream->socket().close(ignored);
      });
    }
  };
}

void HttpClient::hold() {
  asio::post(m_impl->io, [impl = m_impl] {
    if (impl->holds++ == 0) {
      impl->hold_timer.emplace(impl->io, std::chrono::seconds(2));
      impl->hold_timer->async_wait([impl](beast::error_code ec) {
        if (ec) return;
        impl->holds = 0;  // a stream that never became ready must not stop requests for good
        impl->kick();
      });
    }
  });
}

void HttpClient::release() {
  asio::post(m_impl->io, [impl = m_impl] {
    if (impl->holds == 0) return;
    if (--impl->holds == 0) {
      if (impl->hold_timer) impl->hold_timer->cancel();
      impl->kick();
    }
  });
}

const HttpUrl& HttpClient::url() const noexcept { return m_impl->url; }

std::exception_ptr HttpClient::connection_error(const std::string& what) const { return m_impl->connection_error(what); }

std::exception_ptr HttpClient::answer_error(const std::string& request, const HttpResponse& response) const {
  std::string message = response.body;
  try {
    auto body = nlohmann::json::parse(response.body);
    if (body.is_object() && body.contains("error")) message = body["error"].get<std::string>();
  } catch (...) {
  }
  std::string text = "scale: " + request + " on the store server at " + m_impl->url.text + " failed (" +
                     std::to_string(response.status) + "): " + message;
  if (response.status == 401) text += "; give the server's token as \"?token=T\" in the URL";
  return std::make_exception_ptr(Error(text));
}

}  // namespace scale::detail
