#include "store/request_reader.hpp"

#include <algorithm>
#include <iterator>
#include <limits>
#include <string_view>
#include <utility>

#include <boost/beast/core/string.hpp>

namespace scale::detail {
namespace {

namespace http = boost::beast::http;

// A head never stays buffered past the header limit (the parser takes each complete field), and a
// body is taken as it arrives, so this holds a head plus one read.
constexpr std::size_t buffer_limit = store_header_limit + 64 * 1024;
constexpr std::size_t read_size = 16 * 1024;

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

/// `http://host:port/path?query` as `/path?query` (RFC 9112 3.2.2: a server must accept the
/// absolute form); any other target as it is.
std::optional<std::string> origin_form(std::string_view target) {
  std::string_view rest;
  if (target.size() >= 7 && boost::beast::iequals(target.substr(0, 7), "http://"))
    rest = target.substr(7);
  else if (target.size() >= 8 && boost::beast::iequals(target.substr(0, 8), "https://"))
    rest = target.substr(8);
  else
    return std::nullopt;
  std::size_t path = rest.find_first_of("/?");
  if (path == std::string_view::npos) return std::string("/");
  if (rest[path] == '?') return "/" + std::string(rest.substr(path));
  return std::string(rest.substr(path));
}

}  // namespace

RequestReader::RequestReader(std::size_t max_body) : m_max_body(max_body), m_buffer(buffer_limit) {}

boost::asio::mutable_buffer RequestReader::prepare() {
  std::size_t room = m_buffer.max_size() - m_buffer.size();
  return m_buffer.prepare(std::min(read_size, room));
}

void RequestReader::commit(std::size_t n) { m_buffer.commit(n); }

void RequestReader::eof() { m_eof = true; }

RequestReader::State RequestReader::refuse(http::status status, std::string message) {
  m_refused = true;
  m_refusal_status = status;
  m_refusal = std::move(message);
  return State::refused;
}

RequestReader::State RequestReader::parse() {
  if (m_refused) return State::refused;
  if (m_body) return parse_body();
  if (m_head) return m_head_reported ? State::head : parse_head();
  // Between requests: empty lines are ignored (RFC 9112 2.2), consumed as they come.
  while (m_buffer.size() > 0) {
    auto bytes = static_cast<const char*>(m_buffer.data().data());
    if (bytes[0] == '\n') {
      m_buffer.consume(1);
    } else if (bytes[0] == '\r') {
      if (m_buffer.size() < 2) return m_eof ? State::closed : State::need_more;
      if (bytes[1] != '\n') break;
      m_buffer.consume(2);
    } else {
      break;
    }
  }
  if (m_buffer.size() == 0) return m_eof ? State::closed : State::need_more;
  m_head.emplace();
  // The body's size is judged from Content-Length first (the router answers 413), then read
  // with the body limit.
  m_head->body_limit(std::numeric_limits<std::uint64_t>::max());
  m_head_bytes = 0;
  m_head_only = false;
  m_head_reported = false;
  return parse_head();
}

RequestReader::State RequestReader::parse_head() {
  const std::string too_large = "the request's headers exceed " + std::to_string(store_header_limit) + " bytes";
  for (;;) {
    if (m_buffer.size() == 0)
      return m_eof ? refuse(http::status::bad_request, "the connection ended inside a request's headers")
                   : State::need_more;
    // NOTE: Beast's header_limit bounds what one put() may look at, not the head: put() takes
    // every complete field it finds and the next put() starts a fresh allowance, so a head sent
    // in pieces (many small fields, each read shorter than the limit) was never refused, and its
    // fields piled up in memory. The allowance left is what the head has not used yet.
    const std::size_t remaining = store_header_limit - m_head_bytes;
    m_head->header_limit(static_cast<std::uint32_t>(remaining));
    boost::beast::error_code ec;
    std::size_t used = m_head->put(m_buffer.data(), ec);
    m_buffer.consume(used);
    m_head_bytes += used;
    const auto& fields = m_head->get();
    if (static_cast<std::size_t>(std::distance(fields.begin(), fields.end())) > store_field_limit)
      return refuse(http::status::request_header_fields_too_large,
                    "the request has more than " + std::to_string(store_field_limit) + " header fields");
    if (ec == http::error::need_more) {
      if (used > 0) continue;
      if (m_buffer.size() >= remaining) return refuse(http::status::request_header_fields_too_large, too_large);
      return m_eof ? refuse(http::status::bad_request, "the connection ended inside a request's headers")
                   : State::need_more;
    }
    if (ec == http::error::header_limit) return refuse(http::status::request_header_fields_too_large, too_large);
    if (ec) return refuse(http::status::bad_request, "malformed HTTP request: " + ec.message());
    if (m_head->is_header_done()) return accept_head();
    if (used == 0) return State::need_more;
  }
}

RequestReader::State RequestReader::accept_head() {
  auto& head = m_head->get();
  // NOTE: a Transfer-Encoding the parser does not decode leaves the body unread, to be parsed as
  // the next request (request smuggling). Only a lone `chunked` is read; anything else is refused
  // and the connection closed (RFC 9112 6.1: 501 for a coding not understood).
  if (std::size_t codings = head.count(http::field::transfer_encoding); codings > 0) {
    std::string_view coding = trim(head[http::field::transfer_encoding]);
    if (codings > 1 || !boost::beast::iequals(coding, "chunked"))
      return refuse(http::status::not_implemented,
                    "Transfer-Encoding '" + std::string(coding) +
                        "' is not supported: send the body with Content-Length or 'Transfer-Encoding: chunked'");
    if (head.count(http::field::content_length) > 0)
      return refuse(http::status::bad_request, "a request may not have both Transfer-Encoding and Content-Length");
  }
  if (auto target = origin_form(head.target())) head.target(*target);
  if (head.method() == http::verb::head) {
    m_head_only = true;
    head.method(http::verb::get);
  }
  m_head_reported = true;
  return State::head;
}

RequestReader::State RequestReader::parse_body() {
  for (;;) {
    if (m_body->is_done()) return State::request;
    if (m_buffer.size() == 0) {
      if (m_eof) return refuse(http::status::bad_request, "the connection ended inside the request's body");
      return State::need_more;
    }
    boost::beast::error_code ec;
    std::size_t used = m_body->put(m_buffer.data(), ec);
    m_buffer.consume(used);
    if (ec == http::error::need_more) {
      if (used > 0) continue;
      if (m_buffer.size() >= m_buffer.max_size())
        return refuse(http::status::bad_request, "malformed request body: a chunk header that never ends");
      if (m_eof) return refuse(http::status::bad_request, "the connection ended inside the request's body");
      return State::need_more;
    }
    if (ec == http::error::body_limit)
      return refuse(http::status::payload_too_large,
                    "the body exceeds the limit of " + std::to_string(m_max_body) + " bytes (scale-store --max-body)");
    if (ec) return refuse(http::status::bad_request, "malformed request body: " + ec.message());
    if (used == 0 && !m_body->is_done()) return State::need_more;
  }
}

const HttpRequestHead& RequestReader::head() const { return m_head->get(); }

std::optional<std::uint64_t> RequestReader::content_length() const {
  if (auto length = m_head->content_length()) return *length;
  return std::nullopt;
}

bool RequestReader::body_pending() const { return !m_head->is_done(); }

void RequestReader::read_body() {
  m_body.emplace(std::move(*m_head));
  m_head.reset();
  m_body->body_limit(m_max_body);
}

void RequestReader::next() { m_head.reset(); }

HttpRequest RequestReader::take() {
  HttpRequest request = m_body->release();
  m_body.reset();
  return request;
}

}  // namespace scale::detail
