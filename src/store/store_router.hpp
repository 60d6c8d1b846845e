#pragma once
// The store server's request handling without sockets: a request in, a response out, from the
// store's backends. src/store/store_server.cpp reads and writes the bytes and streams the SSE
// endpoints; the fuzz targets (fuzz/) call this directly.
//
// NOTE: this header includes Boost.Beast, a private dependency of the library: it is for the
// library's own sources and fuzz targets, never for a public header.

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "in_process/in_process_memory.hpp"
#include <scale/detail/event_backend.hpp>
#include <scale/detail/memory_backend.hpp>
#include <scale/future.hpp>
#include <scale/store_server.hpp>

namespace scale::detail {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
/// A request whose head is read and whose body is not (yet).
using HttpRequestHead = boost::beast::http::request<boost::beast::http::empty_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;

/// Largest request head the server reads (431 beyond).
inline constexpr std::size_t store_header_limit = 8 * 1024;
/// Most entries in one answer of GET /v1/kv (the default and the largest `limit`).
inline constexpr std::size_t store_list_page_entries = 10'000;
/// About the most bytes of keys and values in one answer of GET /v1/kv.
inline constexpr std::size_t store_list_page_bytes = 8 * 1024 * 1024;
/// Deepest JSON nesting accepted in a body (400 beyond).
inline constexpr int store_max_json_depth = 64;

/// Most parts (watches, event names and event prefixes) one GET /v1/stream may ask for (400 beyond).
inline constexpr std::size_t store_stream_max_parts = 64;

/// One part of a shared stream (GET /v1/stream): a watch of a prefix, the emits of an event name,
/// or (`event_prefix`) the emits of every name that starts with a prefix.
struct StreamPart {
  bool watch = false;  // else: events
  std::string prefix_or_name;
  Revision from = 0;          // a watch's first revision; 0: from now on
  bool event_prefix = false;  // events: prefix_or_name is a prefix of their names ("": every event)
};

/// What an SSE endpoint asks for; the server subscribes and streams it.
struct StreamRequest {
  bool watch = false;  // else: events
  std::string prefix_or_name;
  Revision from = 0;
  /// GET /v1/stream: its parts in the order asked (then `watch`, `prefix_or_name` and `from` are unused).
  std::vector<StreamPart> parts;
  bool shared = false;
};

/// Answers the store's HTTP requests from its backends. Every member may be called from any
/// thread at the same time.
class StoreRouter {
 public:
  /// `metrics` renders the server's part of GET /metrics (request counts, connections, ...).
  /// `memory` is the in-process backend (make_in_process_memory): it lists in pages.
  StoreRouter(std::shared_ptr<MemoryBackend> memory, std::shared_ptr<EventBackend> events, StoreServerOptions options,
              std::function<std::string()> metrics = {});

  /// The endpoint's name in metrics, e.g. "kv_get"; "unknown" for no endpoint.
  static std::string_view endpoint(boost::beast::http::verb method, std::string_view target);
  /// True for the endpoints the server streams (GET /v1/watch, GET /v1/events/{name}, GET /v1/stream).
  static bool is_stream(std::string_view endpoint);

  /// Judges a request from its head alone, before its body is read: Host and Origin
  /// (check_origin), CORS preflight, the token, the query's escapes and a Content-Length over the
  /// body limit. An answer when the request stops here.
  std::optional<HttpResponse> check_head(const HttpRequestHead& head,
                                         std::optional<std::uint64_t> content_length) const;

  /// Answers a request to a non-streaming endpoint, errors included (as 4xx/5xx JSON). The Future
  /// is ready at once unless a backend's write completes later (e.g. after an fsync); `request`
  /// must live until it completes.
  Future<HttpResponse> handle(const HttpRequest& request);

  /// Refuses what a web page must not do: a Host the store does not answer to (421; DNS
  /// rebinding) and an Origin that is neither the store's own nor options().cors_origin (403).
  std::optional<HttpResponse> check_origin(const HttpRequestHead& head) const;

  /// What a request to a streaming endpoint asks for, or the error answer (e.g. a bad `from`).
  std::optional<StreamRequest> stream_request(const HttpRequest& request, HttpResponse& error) const;

  /// A response with the server's common headers, for a request of this HTTP version.
  HttpResponse make_response(unsigned version, bool keep_alive, boost::beast::http::status status, std::string body,
                             std::string_view content_type = "application/json") const;
  /// A `{"error": message, "type": "Error"}` response to a request the router refuses (bad input,
  /// no such endpoint, ...); a 412 (a failed condition, not an error) has no "type".
  HttpResponse error_response(unsigned version, bool keep_alive, boost::beast::http::status status,
                              std::string_view message) const;
  /// The answer to an error a request ran into: its wire form (src/remote/wire_error.hpp), with
  /// the status of its type (404 KeyNotFound, 409 TypeMismatch and other conflicts, 410
  /// Compacted, 500 JournalError or an exception that is not a scale::Error).
  HttpResponse error_response(unsigned version, bool keep_alive, const std::exception_ptr& error) const;
  /// The same, answering `request` (its version and keep-alive).
  template <class Body>
  HttpResponse error_response(const boost::beast::http::request<Body>& request, boost::beast::http::status status,
                              std::string_view message) const {
    return error_response(request.version(), request.keep_alive(), status, message);
  }

  /// Makes GET /healthz answer 503 with the error `health` returns (null: healthy). Called once,
  /// before any request.
  void set_health(std::function<std::exception_ptr()> health) { m_health = std::move(health); }

  /// The in-process backend, with its pages of listing and history.
  PagedMemory& memory() const noexcept { return *m_paged; }
  /// The number of keys and the latest revision, read without copying the store (for /metrics).
  MemoryCounts counts() const { return m_paged->counts(); }
  EventBackend& events() const noexcept { return *m_events; }
  const StoreServerOptions& options() const noexcept { return m_options; }

 private:
  /// GET /ui, /ui/ and /ui/<file>: the dashboard's embedded files (src/store/ui_files.hpp);
  /// throws the 404/405 the router answers.
  HttpResponse ui_file(const HttpRequest& request, std::string_view path) const;

  std::shared_ptr<MemoryBackend> m_memory;
  PagedMemory* m_paged;  // m_memory, as the in-process backend it is
  std::shared_ptr<EventBackend> m_events;
  StoreServerOptions m_options;
  std::function<std::string()> m_metrics;
  std::function<std::exception_ptr()> m_health;
  // The host listened on and the allowed hosts in lower case, as a request's Host is compared.
  std::string m_host;
  std::vector<std::string> m_allowed_hosts;
};

}  // namespace scale::detail
