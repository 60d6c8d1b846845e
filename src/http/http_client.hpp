#pragma once
// The client of the store server (scale-store) that the http:// backends of SharedMemory and
// SharedEventEmitter share. Beast stays in src/http/http_client.cpp: this header names none of it.

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <scale/detail/event_backend.hpp>
#include <scale/detail/memory_backend.hpp>
#include <scale/future.hpp>

namespace scale::detail {

/// `http://host:port[?token=T]`, split.
struct HttpUrl {
  std::string text;  // as given, for messages
  std::string host;
  std::string port;
  std::string token;
};

/// Throws scale::Error naming the URL when it is not `http://host:port[?token=T]`.
HttpUrl parse_http_url(const std::string& url);

struct HttpResponse {
  int status = 0;
  std::string body;
};

/// One Server-Sent Event as the stream parser assembled it.
struct SseEvent {
  std::string id;
  std::string event;  // empty: "message"
  std::string data;
};

/// What a stream reports, always on the client's I/O thread.
struct SseHandlers {
  /// The request target to send on each (re)connection (a watch resumes from what it saw).
  std::function<std::string()> target;
  /// The server has the subscription (its ": ready" comment arrived); called after each connect.
  std::function<void()> on_ready;
  /// An event; return false to end the stream for good.
  std::function<bool(const SseEvent&)> on_event;
  /// The stream cannot go on (the first connection failed, or a non-200 answer).
  std::function<void(std::exception_ptr)> on_error;
};

/// An HTTP/1.1 client of one store server with its own I/O thread. Requests go over a small pool
/// of keep-alive connections (up to 4, each pipelining up to 8 requests); the requests one thread
/// makes keep their order (they share a connection while any is outstanding), so one thread's
/// writes are applied in the order made. Each stream has a connection of its own and reconnects
/// with backoff when it drops.
class HttpClient {
 public:
  explicit HttpClient(HttpUrl url);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Sends a request; the Future fails with scale::ConnectionError when the server is unreachable.
  Future<HttpResponse> request(std::string method, std::string target, std::string body = {},
                               std::vector<std::pair<std::string, std::string>> headers = {});

  /// The same, calling `done` on the client's I/O thread (a Future's then() would run on the loop,
  /// which a handler may be blocking).
  using Done = std::function<void(std::exception_ptr, HttpResponse)>;
  void request(std::string method, std::string target, std::string body,
               std::vector<std::pair<std::string, std::string>> headers, Done done);

  /// Opens an SSE stream; the function returned ends it (any thread, idempotent).
  std::function<void()> stream(SseHandlers handlers);

  /// Requests made while a hold is open wait until every hold is released (or 2 s pass), so a
  /// write made right after watch()/on() reaches a server that already has the subscription.
  /// Returns the release: callable from any thread, any number of times (only the first counts),
  /// also after the client is gone.
  std::function<void()> hold();

  const HttpUrl& url() const noexcept;
  /// Request connections open now (tests check the pool grows with concurrent threads).
  std::size_t connections_for_tests();
  /// The ConnectionError for `what` going wrong while talking to the server.
  std::exception_ptr connection_error(const std::string& what) const;
  /// The error an answer that is not 2xx carries: the error of its "type" (KeyNotFound,
  /// TypeMismatch, Compacted, ...; src/remote/wire_error.hpp), rebuilt from the answer itself, or
  /// a scale::Error naming the request and the server's message for a generic one ("Error").
  std::exception_ptr answer_error(const std::string& request, const HttpResponse& response) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> m_impl;
};

/// Opens the SSE stream behind a subscription: requests wait until the server has it (a hold,
/// released on its first ready or error, or on cancel), every connect makes `queue` ready (then
/// calls handlers.on_ready, if any), an error that ends the stream fails `queue`, and cancelling
/// the subscription ends the stream.
template <class T>
void open_subscription_stream(const std::shared_ptr<HttpClient>& client,
                              const std::shared_ptr<SubscriptionQueue<T>>& queue, SseHandlers handlers) {
  auto release = client->hold();
  handlers.on_ready = [queue, release, then = std::move(handlers.on_ready)] {
    release();
    queue->set_ready();
    if (then) then();
  };
  handlers.on_error = [queue, release](std::exception_ptr error) {
    release();
    queue->set_error(error);
  };
  auto end = client->stream(std::move(handlers));
  queue->set_canceller([end, release] {
    end();
    release();
  });
}

/// The error of a store answer's body whose "type" names one (anything but the generic "Error"),
/// mapped back by error_from_json(); null for any other body.
std::exception_ptr typed_answer_error(const std::string& body);

std::shared_ptr<MemoryBackend> make_http_memory(const std::string& url);
std::shared_ptr<EventBackend> make_http_events(const std::string& url);

}  // namespace scale::detail
