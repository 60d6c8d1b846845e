// The HTTP/1.1 client of scale-store on Beast: one I/O thread, a few keep-alive connections for
// requests (pipelined, each thread's requests in order, reconnected when one drops), and one
// connection per SSE stream (reconnected with backoff).

#include "http/http_client.hpp"

#include "core/promise_callback.hpp"

#include <scale/error.hpp>

#include "remote/wire_error.hpp"

#include <boost/asio.hpp>
#include <boost/asio/experimental/as_tuple.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <future>
#include <unordered_map>
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
    if (name == "token")
      url.token = value;
    else
      throw bad("unknown option '" + name + "'");
  }
  return url;
}

struct HttpClient::Impl : std::enable_shared_from_this<Impl> {
  using Request = http::request<http::string_body>;

  struct Pending {
    std::shared_ptr<Request> request;
    HttpClient::Done done;
    std::thread::id origin;
    bool retried = false;
  };

  /// One keep-alive connection; replaced (not reused) after an error, so a reader or writer still
  /// suspended on the old one finds out from its generation and leaves quietly.
  struct Connection {
    explicit Connection(asio::io_context& io) : stream(io) {}
    beast::tcp_stream stream;
    beast::flat_buffer buffer;  // responses read ahead of the one being parsed stay here
    std::size_t written = 0;
  };

  /// A connection with its requests: `queue` waits to be written, `inflight` was written and waits
  /// for its answer (HTTP/1.1 answers in order, so the front is always the next one).
  struct Lane {
    std::shared_ptr<Connection> connection;
    std::deque<Pending> queue, inflight;
    bool connecting = false, writing = false, reading = false;
    std::size_t outstanding() const { return queue.size() + inflight.size(); }
  };

  static constexpr std::size_t max_connections = 4;
  static constexpr std::size_t pipeline_depth = 8;  // the server queues at most 8 answers per connection

  struct Origin {
    std::size_t lane = 0;
    std::size_t outstanding = 0;
  };

  explicit Impl(HttpUrl u) : url(std::move(u)), work(asio::make_work_guard(io)) {}

  HttpUrl url;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
  std::atomic<bool> stopping{false};

  // I/O thread only.
  std::vector<std::shared_ptr<Lane>> lanes;
  std::unordered_map<std::thread::id, Origin> origins;
  std::deque<Pending> held;  // made while a hold is open
  int holds = 0;
  std::optional<asio::steady_timer> hold_timer;
  std::vector<std::shared_ptr<beast::tcp_stream>> streams;

  std::exception_ptr connection_error(const std::string& what) const {
    return std::make_exception_ptr(ConnectionError("scale::ConnectionError: cannot reach the store server at " +
                                                   url.text + ": " + what + hint(url)));
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

  // NOTE: requests made by one thread keep their order: while a thread has a request outstanding,
  // its next ones go to the same connection, where HTTP/1.1 keeps them in order (pipelined, up to
  // pipeline_depth written ahead of their answers). A thread with nothing outstanding takes an idle
  // connection, or opens one up to max_connections, or joins the least busy. So the loop thread's
  // requests (every coroutine's) form one ordered pipeline, and other threads get connections of
  // their own.
  void submit(Pending pending) {
    if (holds > 0) {
      held.push_back(std::move(pending));
      return;
    }
    auto& origin = origins[pending.origin];
    if (origin.outstanding == 0) origin.lane = pick_lane();
    ++origin.outstanding;
    auto& lane = lanes[origin.lane];
    lane->queue.push_back(std::move(pending));
    kick(lane);
  }

  std::size_t pick_lane() {
    std::size_t best = 0;
    for (std::size_t i = 0; i < lanes.size(); ++i) {
      if (lanes[i]->outstanding() == 0) return i;
      if (lanes[i]->outstanding() < lanes[best]->outstanding()) best = i;
    }
    if (lanes.size() < max_connections) {
      lanes.push_back(std::make_shared<Lane>());
      return lanes.size() - 1;
    }
    return best;
  }

  void finish(Pending& pending, std::exception_ptr error, HttpResponse answer) {
    if (auto found = origins.find(pending.origin); found != origins.end() && --found->second.outstanding == 0)
      origins.erase(found);
    pending.done(error, std::move(answer));
  }

  void release_held() {
    auto waiting = std::move(held);
    held.clear();
    for (auto& pending : waiting) submit(std::move(pending));
  }

  void kick(const std::shared_ptr<Lane>& lane) {
    if (stopping) return;
    if (!lane->connection) {
      if (!lane->connecting && !lane->queue.empty()) {
        lane->connecting = true;
        asio::co_spawn(io, open(shared_from_this(), lane), asio::detached);
      }
      return;
    }
    if (!lane->writing && !lane->queue.empty() && lane->inflight.size() < pipeline_depth) {
      lane->writing = true;
      asio::co_spawn(io, write_requests(shared_from_this(), lane, lane->connection), asio::detached);
    }
    if (!lane->reading && !lane->inflight.empty()) {
      lane->reading = true;
      asio::co_spawn(io, read_answers(shared_from_this(), lane, lane->connection), asio::detached);
    }
  }

  asio::awaitable<void> open([[maybe_unused]] std::shared_ptr<Impl> self, std::shared_ptr<Lane> lane) {
    auto connection = std::make_shared<Connection>(io);
    auto ec = co_await connect(connection->stream);
    lane->connecting = false;
    if (stopping) co_return;
    if (ec) {
      // Nothing was sent: every request waiting for this connection fails.
      auto failed = std::move(lane->queue);
      lane->queue.clear();
      auto error = connection_error(ec.message());
      for (auto& pending : failed) finish(pending, error, {});
      co_return;
    }
    lane->connection = std::move(connection);
    kick(lane);
  }

  asio::awaitable<void> write_requests([[maybe_unused]] std::shared_ptr<Impl> self, std::shared_ptr<Lane> lane,
                                       std::shared_ptr<Connection> connection) {
    while (lane->connection == connection && !lane->queue.empty() && lane->inflight.size() < pipeline_depth &&
           !stopping) {
      lane->inflight.push_back(std::move(lane->queue.front()));
      lane->queue.pop_front();
      auto request = lane->inflight.back().request;  // the answer may come (and pop it) before the write ends
      ++connection->written;
      kick(lane);  // start the reader
      connection->stream.expires_after(std::chrono::seconds(30));
      auto [ec, n] = co_await http::async_write(connection->stream, *request, use_tuple);
      if (ec) {
        failed(lane, connection, ec);
        co_return;
      }
    }
    if (lane->connection == connection) lane->writing = false;
  }

  asio::awaitable<void> read_answers([[maybe_unused]] std::shared_ptr<Impl> self, std::shared_ptr<Lane> lane,
                                     std::shared_ptr<Connection> connection) {
    while (lane->connection == connection && !lane->inflight.empty() && !stopping) {
      http::response<http::string_body> response;
      connection->stream.expires_after(std::chrono::seconds(30));
      auto [ec, n] = co_await http::async_read(connection->stream, connection->buffer, response, use_tuple);
      if (lane->connection != connection) co_return;  // failed meanwhile; the requests moved on
      if (ec) {
        failed(lane, connection, ec);
        co_return;
      }
      Pending pending = std::move(lane->inflight.front());
      lane->inflight.pop_front();
      HttpResponse answer;
      answer.status = static_cast<int>(response.result_int());
      answer.body = std::move(response.body());
      bool closing = !response.keep_alive();
      finish(pending, nullptr, std::move(answer));
      if (closing) {
        // The server will read nothing more here: what was written after this answer goes again.
        failed(lane, connection, make_error_code(beast::error::timeout), /*unanswered_is_unsent=*/true);
        co_return;
      }
      kick(lane);  // the writer may have waited for room in the pipeline
    }
    if (lane->connection == connection) {
      lane->reading = false;
      if (lane->inflight.empty()) connection->stream.expires_never();
    }
  }

  // NOTE: a request written on a connection that had carried others may have met the server's
  // idle close; it goes once more on a new connection (as browsers do). One that failed on a
  // fresh connection, or already went twice, fails with ConnectionError.
  void failed(const std::shared_ptr<Lane>& lane, const std::shared_ptr<Connection>& connection, beast::error_code ec,
              bool unanswered_is_unsent = false) {
    if (lane->connection != connection) return;
    beast::error_code ignored;
    connection->stream.socket().close(ignored);
    lane->connection.reset();
    lane->writing = lane->reading = false;
    auto unanswered = std::move(lane->inflight);
    lane->inflight.clear();
    const bool reused = connection->written > unanswered.size();
    auto error = connection_error(ec.message());
    std::deque<Pending> again;
    for (auto& pending : unanswered) {
      if (unanswered_is_unsent || (reused && !pending.retried)) {
        pending.retried = pending.retried || !unanswered_is_unsent;
        again.push_back(std::move(pending));
      } else {
        finish(pending, error, {});
      }
    }
    lane->queue.insert(lane->queue.begin(), std::make_move_iterator(again.begin()),
                       std::make_move_iterator(again.end()));
    kick(lane);
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
  asio::awaitable<void> run_stream([[maybe_unused]] std::shared_ptr<Impl> self,
                                   std::shared_ptr<beast::tcp_stream> stream, std::shared_ptr<std::atomic<bool>> ended,
                                   SseHandlers handlers) {
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
          if (!*ended) {
            std::exception_ptr error = typed_answer_error(body);
            if (!error)
              error = std::make_exception_ptr(Error("scale: the store server at " + url.text + " refused a stream (" +
                                                    std::to_string(parser.get().result_int()) + "): " + body));
            handlers.on_error(error);
          }
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
                if (field == "data")
                  event.data += value + "\n";
                else if (field == "id")
                  event.id = value;
                else if (field == "event")
                  event.event = value;
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
  // NOTE: the thread owns a reference too. A client destroyed by one of its own callbacks detaches
  // the thread (it cannot join itself); the last reference must then go when run() has returned,
  // not with the handler that the destructor posts, inside run(), which would free the io_context
  // under the scheduler still using it.
  m_impl->thread = std::thread([impl = m_impl] { impl->io.run(); });
}

HttpClient::~HttpClient() {
  m_impl->stopping = true;
  asio::post(m_impl->io, [impl = m_impl] {
    for (auto& stream : impl->streams) stream->socket().close();
    impl->streams.clear();
    if (impl->hold_timer) impl->hold_timer->cancel();
    auto closed = std::make_exception_ptr(Error("scale: the store client was closed"));
    std::deque<Impl::Pending> left = std::move(impl->held);
    for (auto& lane : impl->lanes) {
      if (lane->connection) lane->connection->stream.socket().close();
      lane->connection.reset();
      for (auto* list : {&lane->inflight, &lane->queue})
        for (auto& pending : *list) left.push_back(std::move(pending));
    }
    impl->lanes.clear();
    for (auto& pending : left) pending.done(closed, {});
    impl->work.reset();
  });
  if (m_impl->thread.joinable()) {
    if (m_impl->thread.get_id() == std::this_thread::get_id())
      m_impl->thread.detach();
    else
      m_impl->thread.join();
  }
}

Future<HttpResponse> HttpClient::request(std::string method, std::string target, std::string body,
                                         std::vector<std::pair<std::string, std::string>> headers) {
  PromiseCallback<HttpResponse> bridge;
  request(std::move(method), std::move(target), std::move(body), std::move(headers),
          bridge.callback<HttpResponse>([](HttpResponse response) { return response; }));
  return std::move(bridge.future);
}

void HttpClient::request(std::string method, std::string target, std::string body,
                         std::vector<std::pair<std::string, std::string>> headers, Done done) {
  auto request = std::make_shared<Impl::Request>(m_impl->make_request(method, target));
  for (auto& [name, value] : headers) request->set(name, value);
  if (!body.empty()) request->set(http::field::content_type, "application/json");
  request->body() = std::move(body);
  request->prepare_payload();
  Impl::Pending pending{std::move(request), std::move(done), std::this_thread::get_id()};
  // NOTE: a local reference keeps the Impl (and its io_context) until post() has returned: the
  // request may be answered and its callback destroy this client, with the last other reference,
  // while post() is still waking the I/O thread (found by TSan). Every post from a member does so.
  std::shared_ptr<Impl> impl = m_impl;
  asio::post(impl->io, [impl, pending = std::move(pending)]() mutable { impl->submit(std::move(pending)); });
}

std::function<void()> HttpClient::stream(SseHandlers handlers) {
  auto ended = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<Impl> impl = m_impl;  // see the NOTE in request()
  auto stream = std::make_shared<beast::tcp_stream>(impl->io);
  asio::post(impl->io, [impl, stream, ended, handlers = std::move(handlers)]() mutable {
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

std::function<void()> HttpClient::hold() {
  std::shared_ptr<Impl> impl = m_impl;  // see the NOTE in request()
  asio::post(impl->io, [impl] {
    if (impl->holds++ == 0) {
      impl->hold_timer.emplace(impl->io, std::chrono::seconds(2));
      impl->hold_timer->async_wait([impl](beast::error_code ec) {
        if (ec) return;
        impl->holds = 0;  // a stream that never became ready must not stop requests for good
        impl->release_held();
      });
    }
  });
  auto released = std::make_shared<std::atomic<bool>>(false);
  return [weak = std::weak_ptr<Impl>(m_impl), released] {
    if (released->exchange(true)) return;
    auto impl = weak.lock();
    if (!impl) return;
    asio::post(impl->io, [impl] {
      if (impl->holds == 0) return;  // the 2 s timer gave up on every hold
      if (--impl->holds == 0) {
        if (impl->hold_timer) impl->hold_timer->cancel();
        impl->release_held();
      }
    });
  };
}

std::size_t HttpClient::connections_for_tests() {
  auto counted = std::make_shared<std::promise<std::size_t>>();
  auto answer = counted->get_future();
  std::shared_ptr<Impl> impl = m_impl;  // see the NOTE in request()
  asio::post(impl->io, [impl, counted] {
    std::size_t open = 0;
    for (auto& lane : impl->lanes) open += lane->connection != nullptr;
    counted->set_value(open);
  });
  return answer.get();
}

const HttpUrl& HttpClient::url() const noexcept { return m_impl->url; }

std::exception_ptr HttpClient::connection_error(const std::string& what) const {
  return m_impl->connection_error(what);
}

std::exception_ptr typed_answer_error(const std::string& body) {
  auto wire = nlohmann::json::parse(body, nullptr, false);
  if (!wire.is_object()) return nullptr;
  auto type = wire.find("type");
  if (type == wire.end() || !type->is_string() || *type == "Error") return nullptr;
  try {
    return error_from_json(wire);
  } catch (const Error&) {
    return nullptr;  // not a wire error after all: reported as an unexpected answer
  }
}

std::exception_ptr HttpClient::answer_error(const std::string& request, const HttpResponse& response) const {
  if (auto typed = typed_answer_error(response.body)) return typed;
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
