#pragma once
// A connection's bytes in, whole requests (or the error answer owed to the client) out, without a
// socket: src/store/store_server.cpp reads the socket into it and writes what the router answers;
// fuzz/connection.cpp feeds it directly. Every limit on what a client may send before its request
// is routed is applied here, however the bytes arrive (one burst or one byte at a time).
//
// NOTE: this header includes Boost.Beast, a private dependency of the library.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/status.hpp>

#include "store/store_router.hpp"

namespace scale::detail {

/// Most header fields a request may have (431 beyond).
inline constexpr std::size_t store_field_limit = 100;

/// Parses one connection's requests in turn. Not thread-safe (a connection's strand owns it).
class RequestReader {
 public:
  enum class State {
    need_more,  // give it more bytes (or eof())
    head,       // head() is read: judge it, then read_body() or next()
    request,    // take() the whole request
    refused,    // answer refusal() and close the connection
    closed,     // the client ended the connection between requests
  };

  /// `max_body`: the largest body accepted (chunked included; 413 beyond).
  explicit RequestReader(std::size_t max_body);

  /// Room to receive into; commit() what was received.
  boost::asio::mutable_buffer prepare();
  void commit(std::size_t n);
  /// The client sent everything it will send.
  void eof();

  /// Parses what is buffered and says what is next.
  State parse();

  /// True once a byte of the current request has arrived (a timeout then owes the client a 408).
  bool in_request() const noexcept { return m_head.has_value() || m_body.has_value(); }

  /// The current request's head (State::head): HEAD is seen as GET (head_only()), an
  /// absolute-form target as its path and query.
  const HttpRequestHead& head() const;
  std::optional<std::uint64_t> content_length() const;
  /// True when the request has a body still to read.
  bool body_pending() const;
  /// The request was a HEAD: answer it as the GET it is given as, without the body.
  bool head_only() const noexcept { return m_head_only; }

  /// After State::head: read the body (then State::request).
  void read_body();
  /// After State::head of a request without a body that was answered from its head: go on to
  /// the next request.
  void next();
  /// After State::request: the request; the reader goes on to the next one.
  HttpRequest take();

  /// After State::refused: the status and the reason to answer with.
  boost::beast::http::status refusal_status() const noexcept { return m_refusal_status; }
  const std::string& refusal() const noexcept { return m_refusal; }

 private:
  State refuse(boost::beast::http::status status, std::string message);
  State parse_head();
  State parse_body();
  /// Checks a head just read; refuses what the server cannot read safely.
  State accept_head();

  std::size_t m_max_body;
  boost::beast::flat_buffer m_buffer;
  std::optional<boost::beast::http::request_parser<boost::beast::http::empty_body>> m_head;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> m_body;
  std::size_t m_head_bytes = 0;  // of the current head, every put() counted
  bool m_head_only = false;
  bool m_head_reported = false;
  bool m_eof = false;
  bool m_refused = false;
  boost::beast::http::status m_refusal_status = boost::beast::http::status::bad_request;
  std::string m_refusal;
};

}  // namespace scale::detail
