// scale::detail::StoreRouter: the store server's answers to its non-streaming requests, with no
// socket in sight (src/store/store_server.cpp does the I/O; fuzz/request_router.cpp feeds it bytes).

#include "store/store_router.hpp"

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <limits>
#include <map>
#include <utility>

#include <boost/asio/ip/address.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/verb.hpp>
#include <nlohmann/json.hpp>

#include "core/entry_json.hpp"
#include "core/percent_encoding.hpp"
#include "store/ui_files.hpp"
#include <scale/error.hpp>

#include "remote/wire_error.hpp"

namespace scale::detail {
namespace {

namespace http = boost::beast::http;
using json = nlohmann::json;

/// A request that cannot be answered with 200: thrown by the helpers, answered by the router.
struct HttpError {
  http::status status;
  std::string message;
};

[[noreturn]] void fail(http::status status, std::string message) { throw HttpError{status, std::move(message)}; }

/// The request target split into its raw path and decoded query parameters.
struct Target {
  std::string_view raw_path;
  std::map<std::string, std::string, std::less<>> query;

  const std::string* find(std::string_view name) const {
    auto found = query.find(name);
    return found == query.end() ? nullptr : &found->second;
  }
};

/// The query's name=value pairs in order, decoded, repeated names kept (GET /v1/stream names
/// several watches); a malformed escape is a 400.
std::vector<std::pair<std::string, std::string>> query_pairs(std::string_view target) {
  std::vector<std::pair<std::string, std::string>> pairs;
  auto question = target.find('?');
  if (question == std::string_view::npos) return pairs;
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
    pairs.emplace_back(std::move(*name), std::move(*value));
  }
  return pairs;
}

Target parse_target(std::string_view target) {
  Target result;
  result.raw_path = target.substr(0, target.find('?'));
  // A repeated name keeps its first value here; GET /v1/stream reads them all (query_pairs).
  for (auto& [name, value] : query_pairs(target)) result.query.emplace(std::move(name), std::move(value));
  return result;
}

/// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t length = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (length == 0 || i + length > text.size()) return false;
    std::uint32_t code = length == 1 ? c : c & (0x7f >> length);
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next >> 6) != 0x2) return false;
      code = (code << 6) | (next & 0x3f);
    }
    static constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < smallest[length] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
    i += length;
  }
  return true;
}

/// The decoded path after `prefix` (a key or an event name, which may contain '/').
std::string path_name(std::string_view raw_path, std::string_view prefix, std::string_view what) {
  auto decoded = percent_decode(raw_path.substr(prefix.size()), false);
  if (!decoded)
    fail(http::status::bad_request,
         "the " + std::string(what) + " in the path has a malformed percent escape (use %XX with two hex digits)");
  if (decoded->empty()) fail(http::status::bad_request, "the " + std::string(what) + " in the path is empty");
  // A listing names keys in JSON strings: a key that is not UTF-8 could never be named back.
  if (!valid_utf8(*decoded))
    fail(http::status::bad_request,
         "the " + std::string(what) + " in the path is not valid UTF-8 once percent-decoded; names must be UTF-8");
  return std::move(*decoded);
}

/// Nesting depth of a JSON text, counting brackets outside strings; stops counting past `limit`.
bool nesting_within(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
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

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

/// The host name of a Host header value, without its port and brackets, in lower case.
std::string host_name(std::string_view value) {
  if (value.starts_with('[')) {
    auto close = value.find(']');
    return lower(value.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1));
  }
  auto colon = value.find(':');
  return lower(value.substr(0, colon));
}

/// The address a name spells, when it is an IP literal (a name no DNS answer can change).
std::optional<boost::asio::ip::address> ip_literal(const std::string& name) {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(name, ec);
  if (ec) return std::nullopt;
  return address;
}

bool blank(std::string_view text) { return text.find_first_not_of(" \t\r\n") == std::string_view::npos; }

/// The body as JSON whatever the Content-Type says (curl's -d says form-urlencoded).
json parse_body(const HttpRequest& request) {
  const std::string& body = request.body();
  if (blank(body)) fail(http::status::bad_request, "the body is empty; send a JSON value");
  if (!nesting_within(body, store_max_json_depth))
    fail(http::status::bad_request,
         "the body's JSON is nested deeper than " + std::to_string(store_max_json_depth) + " levels");
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

/// A comma-separated list of revisions (a shared stream's `from` and event ids), one per watch.
std::optional<std::vector<Revision>> parse_revision_list(std::string_view text) {
  std::vector<Revision> revisions;
  for (;;) {
    auto comma = text.find(',');
    auto revision = parse_revision(text.substr(0, comma));
    if (!revision) return std::nullopt;
    revisions.push_back(*revision);
    if (comma == std::string_view::npos) return revisions;
    text.remove_prefix(comma + 1);
  }
}

/// GET /v1/stream?watch=P&event=E&event_prefix=Q...&from=R1,R2: its parts in order; Last-Event-ID (the stream's
/// own ids: for each watch the last revision it delivered) resumes each watch right after it.
StreamRequest shared_stream_request(const HttpRequest& request) {
  StreamRequest what;
  what.shared = true;
  std::optional<std::vector<Revision>> from;
  for (auto& [name, value] : query_pairs(request.target())) {
    if (name == "watch") {
      what.parts.push_back(StreamPart{true, std::move(value), 0});
    } else if (name == "event") {
      if (value.empty()) fail(http::status::bad_request, "an 'event' part needs an event name");
      what.parts.push_back(StreamPart{false, std::move(value), 0});
    } else if (name == "event_prefix") {
      what.parts.push_back(StreamPart{false, std::move(value), 0, true});
    } else if (name == "from") {
      from = parse_revision_list(value);
      if (!from)
        fail(http::status::bad_request,
             "'from' must be revisions separated by commas, one per watch (0: from now on), not '" + value + "'");
    } else if (name != "token") {
      fail(http::status::bad_request,
           "GET /v1/stream takes 'watch', 'event', 'event_prefix', 'from' and 'token', not '" + name +
               "' (see docs/http-api.md)");
    }
    if (what.parts.size() > store_stream_max_parts) break;
  }
  if (what.parts.empty() || what.parts.size() > store_stream_max_parts)
    fail(http::status::bad_request, "a stream needs 1 to " + std::to_string(store_stream_max_parts) +
                                        " parts (watch=PREFIX, event=NAME or event_prefix=PREFIX), not " +
                                        (what.parts.empty() ? std::string("none") : std::string("more")) +
                                        "; open another stream for more");
  for (const auto& part : what.parts)
    if (!valid_utf8(part.prefix_or_name))
      fail(http::status::bad_request, "a stream's prefix or event name is not valid UTF-8 once percent-decoded");
  const auto watches = static_cast<std::size_t>(
      std::count_if(what.parts.begin(), what.parts.end(), [](const StreamPart& part) { return part.watch; }));
  if (auto last = request.find("Last-Event-ID"); last != request.end()) {
    auto seen = parse_revision_list(last->value());
    if (!seen || seen->size() != watches ||
        std::find(seen->begin(), seen->end(), std::numeric_limits<Revision>::max()) != seen->end())
      fail(http::status::bad_request, "Last-Event-ID must be this stream's id: one revision per watch, by commas (" +
                                          std::to_string(watches) + " here)");
    for (auto& revision : *seen) ++revision;  // resumes after what was delivered
    from = std::move(seen);
  }
  if (from) {
    if (from->size() != watches)
      fail(http::status::bad_request, "'from' names " + std::to_string(from->size()) + " revisions for " +
                                          std::to_string(watches) + " watches; give one per watch");
    std::size_t i = 0;
    for (auto& part : what.parts)
      if (part.watch) part.from = (*from)[i++];
  }
  return what;
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

/// Appends `value` as JSON text (no intermediate string). Bytes that are not UTF-8 (a key may be
/// any percent-decoded bytes) become U+FFFD rather than an exception.
void append_json(std::string& out, const json& value) {
  nlohmann::detail::serializer<json> serializer(nlohmann::detail::output_adapter<char>(out), ' ',
                                                json::error_handler_t::replace);
  serializer.dump(value, false, false, 0);
}

/// An entry as JSON text, written into `out`: the bytes `json(entry)` (core/entry_json.hpp)
/// would give, fields in its (sorted) order, without copying the value into a json object first.
void append_entry(std::string& out, const Entry& entry) {
  out += "{\"key\":";
  append_json(out, json(entry.key));
  out += ",\"revision\":";
  out += std::to_string(entry.revision);
  out += ",\"timestamp_ms\":";
  out += std::to_string(entry.timestamp_ms);
  out += ",\"value\":";
  append_json(out, entry.value);
  out += '}';
}

void require(http::verb method, std::initializer_list<http::verb> allowed, const HttpRequest& request,
             std::string_view path) {
  if (std::find(allowed.begin(), allowed.end(), method) == allowed.end())
    fail(http::status::method_not_allowed,
         "method " + std::string(request.method_string()) + " is not allowed on " + std::string(path));
}

std::string revision_body(Revision revision) { return "{\"revision\":" + std::to_string(revision) + "}\n"; }

/// The status that answers an error of this wire type (docs/http-api.md lists them).
http::status status_of(std::string_view type) {
  if (type == "KeyNotFound") return http::status::not_found;
  if (type == "Compacted") return http::status::gone;
  if (type == "Stopped") return http::status::service_unavailable;
  if (type == "JournalError") return http::status::internal_server_error;  // applied, not durable: the server's fault
  if (type == "RemoteError") return http::status::internal_server_error;   // not a scale::Error: e.g. bad_alloc
  return http::status::conflict;  // TypeMismatch, an increment that overflows: the store's state refuses it
}

/// The revision an If-Match header names: its number, or for '*' the key's current revision (412
/// when the key is absent); 400 for anything else.
Future<Revision> if_match_revision(MemoryBackend& memory, std::string value, std::string key) {
  if (value == "*") {
    Future<std::optional<Entry>> found = memory.entry(key);
    std::optional<Entry> entry = co_await detail::resume_where_completed(std::move(found));
    if (!entry) fail(http::status::precondition_failed, "key '" + key + "' is absent (If-Match: *)");
    co_return entry->revision;
  }
  std::optional<Revision> expected = parse_revision(value);
  if (!expected || *expected == 0)
    fail(http::status::bad_request, "If-Match needs a revision, e.g. If-Match: 42 or If-Match: \"42\"");
  co_return *expected;
}

/// Fails with 412 for a conditional write to `key` that found it other than `expected` (0: absent),
/// saying where the key is now.
Future<void> refuse_condition(MemoryBackend& memory, std::string key, Revision expected) {
  Future<std::optional<Entry>> found = memory.entry(key);
  std::optional<Entry> current = co_await detail::resume_where_completed(std::move(found));
  fail(http::status::precondition_failed,
       "key '" + key + "' " +
           (current ? "is at revision " + std::to_string(current->revision) : std::string("is absent")) +
           (expected == 0 ? ", not absent" : ", not " + std::to_string(expected)));
}

}  // namespace

StoreRouter::StoreRouter(std::shared_ptr<MemoryBackend> memory, std::shared_ptr<EventBackend> events,
                         StoreServerOptions options, std::function<std::string()> metrics)
    : m_memory(std::move(memory)),
      m_paged(dynamic_cast<PagedMemory*>(m_memory.get())),
      m_events(std::move(events)),
      m_options(std::move(options)),
      m_metrics(std::move(metrics)),
      m_host(lower(m_options.host)) {
  for (const auto& allowed : m_options.allowed_hosts) m_allowed_hosts.push_back(lower(allowed));
  if (!m_paged) throw Error("scale::detail::StoreRouter: the store's memory must be the in-process backend");
}

std::string_view StoreRouter::endpoint(http::verb method, std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  if (path == "/healthz") return "healthz";
  if (path == "/metrics") return "metrics";
  if (path == "/ui" || path.starts_with("/ui/")) return "ui";
  if (path == "/v1/kv") return method == http::verb::post ? "kv_set_many" : "kv_list";
  if (path.starts_with("/v1/kv/")) {
    switch (method) {
      case http::verb::get:
        return "kv_get";
      case http::verb::put:
        return "kv_put";
      case http::verb::delete_:
        return "kv_delete";
      default:
        return "kv_other";
    }
  }
  if (path.starts_with("/v1/increment/")) return "increment";
  if (path == "/v1/watch") return "watch";
  if (path == "/v1/stream") return "stream";
  if (path.starts_with("/v1/events/")) return method == http::verb::post ? "events_emit" : "events_stream";
  return "unknown";
}

bool StoreRouter::is_stream(std::string_view endpoint) {
  return endpoint == "watch" || endpoint == "events_stream" || endpoint == "stream";
}

HttpResponse StoreRouter::make_response(unsigned version, bool keep_alive, http::status status, std::string body,
                                        std::string_view content_type) const {
  HttpResponse response{status, version};
  response.set(http::field::server, "scale-store");
  response.set(http::field::content_type, content_type);
  if (!m_options.cors_origin.empty()) response.set(http::field::access_control_allow_origin, m_options.cors_origin);
  response.keep_alive(keep_alive);
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

HttpResponse StoreRouter::error_response(unsigned version, bool keep_alive, http::status status,
                                         std::string_view message) const {
  json wire = {{"error", message}};
  // A failed condition is an answer, not an error: compare_and_set returns false.
  if (status != http::status::precondition_failed) wire["type"] = "Error";
  std::string body;
  append_json(body, wire);
  body += '\n';
  return make_response(version, keep_alive, status, std::move(body));
}

HttpResponse StoreRouter::error_response(unsigned version, bool keep_alive, const std::exception_ptr& error) const {
  json wire = error_to_json(error);
  const http::status status = status_of(wire.at("type").get_ref<const std::string&>());
  std::string body;
  append_json(body, wire);
  body += '\n';
  return make_response(version, keep_alive, status, std::move(body));
}

std::optional<HttpResponse> StoreRouter::check_head(const HttpRequestHead& head,
                                                    std::optional<std::uint64_t> content_length) const {
  std::string_view endpoint_name = endpoint(head.method(), head.target());
  Target target;
  try {
    target = parse_target(head.target());
  } catch (const HttpError& error) {
    return error_response(head, error.status, error.message);
  }
  if (auto refused = check_origin(head)) return refused;
  if (head.method() == http::verb::options && !m_options.cors_origin.empty()) {
    auto response = make_response(head.version(), head.keep_alive(), http::status::no_content, "");
    response.set(http::field::access_control_allow_methods, "GET, PUT, POST, DELETE, OPTIONS");
    response.set(http::field::access_control_allow_headers,
                 "Authorization, Content-Type, If-Match, If-None-Match, Last-Event-ID");
    response.set(http::field::access_control_max_age, "600");
    return response;
  }
  // The dashboard's files hold no data (the page sends the token on its /v1/ calls), so a browser
  // opens /ui/ with no header to send.
  if (!m_options.token.empty() && endpoint_name != "healthz" && endpoint_name != "ui") {
    std::string_view authorization = head[http::field::authorization];
    bool ok = false;
    // The scheme is case-insensitive (RFC 9110 11.1): "bearer" is "Bearer".
    if (authorization.size() > 7 && boost::beast::iequals(authorization.substr(0, 7), "Bearer "))
      ok = constant_time_equal(authorization.substr(7), m_options.token);
    if (!ok && is_stream(endpoint_name))
      if (const std::string* token = target.find("token")) ok = constant_time_equal(*token, m_options.token);
    if (!ok) {
      auto response = error_response(head, http::status::unauthorized,
                                     authorization.empty()
                                         ? "this server requires a token: send 'Authorization: Bearer <token>'"
                                         : "the token is wrong");
      response.set(http::field::www_authenticate, "Bearer");
      return response;
    }
  }
  if (content_length && *content_length > m_options.max_body)
    return error_response(head, http::status::payload_too_large,
                          "the body has " + std::to_string(*content_length) + " bytes; the limit is " +
                              std::to_string(m_options.max_body) + " (scale-store --max-body)");
  return std::nullopt;
}

std::optional<HttpResponse> StoreRouter::check_origin(const HttpRequestHead& head) const {
  // A request without Host (HTTP/1.0) comes from no browser: DNS rebinding needs one.
  const std::string_view host = head[http::field::host];
  if (!host.empty()) {
    const std::string name = host_name(host);
    bool known = name == "localhost" || name == m_host;
    for (const auto& allowed : m_allowed_hosts) known = known || name == allowed;
    if (!known) {
      if (auto address = ip_literal(name)) {
        // An IP literal is what a client typed, not a name a page's DNS may point here; every one
        // is accepted by a server listening on all addresses, loopback ones by any server.
        auto listened = ip_literal(m_options.host);
        known = address->is_loopback() || (listened && listened->is_unspecified());
      }
    }
    if (!known)
      return error_response(head, http::status::misdirected_request,
                            "Host '" + std::string(host) +
                                "' is not this store's address; start scale-store with --allowed-host " + name +
                                " to accept it (a name this store does not know is how a DNS-rebinding page "
                                "reaches a loopback server)");
  }
  // Browsers send Origin on cross-origin requests and on every POST, PUT and DELETE: a page may
  // write only from the store's own origin (its dashboard) or from --cors-origin.
  if (auto origin = head.find(http::field::origin); origin != head.end()) {
    const std::string_view value = origin->value();
    const bool own = !host.empty() && lower(value) == "http://" + lower(host);
    const bool allowed = !m_options.cors_origin.empty() && value == m_options.cors_origin;
    if (!own && !allowed)
      return error_response(head, http::status::forbidden,
                            "requests from the web page at Origin '" + std::string(value) +
                                "' are refused: only the store's own origin" +
                                (host.empty() ? std::string() : " (http://" + std::string(host) + ")") +
                                " and scale-store --cors-origin may use it from a browser");
  }
  return std::nullopt;
}

std::optional<StreamRequest> StoreRouter::stream_request(const HttpRequest& request, HttpResponse& error) const {
  try {
    Target target = parse_target(request.target());
    const std::string_view path = target.raw_path;
    if (path == "/v1/watch") {
      require(request.method(), {http::verb::get}, request, path);
      StreamRequest watch{true, "", 0, {}, false};
      if (const std::string* prefix = target.find("prefix")) watch.prefix_or_name = *prefix;
      if (const std::string* from_text = target.find("from")) {
        auto from = parse_revision(*from_text);
        if (!from)
          fail(http::status::bad_request, "'from' must be a revision (an integer >= 0), not '" + *from_text + "'");
        watch.from = *from;
      }
      if (auto last = request.find("Last-Event-ID"); last != request.end()) {
        auto seen = parse_revision(last->value());
        if (!seen || *seen == std::numeric_limits<Revision>::max())
          fail(http::status::bad_request, "Last-Event-ID must be a revision (an integer >= 0)");
        watch.from = *seen + 1;
      }
      return watch;
    }
    if (path.starts_with("/v1/events/")) {
      std::string name = path_name(path, "/v1/events/", "event name");
      require(request.method(), {http::verb::get}, request, path);
      return StreamRequest{false, std::move(name), 0, {}, false};
    }
    if (path == "/v1/stream") {
      require(request.method(), {http::verb::get}, request, path);
      return shared_stream_request(request);
    }
    fail(http::status::not_found, "no stream at " + std::string(path));
  } catch (const HttpError& failure) {
    error = error_response(request, failure.status, failure.message);
  }
  return std::nullopt;
}

HttpResponse StoreRouter::ui_file(const HttpRequest& request, std::string_view path) const {
  if (!m_options.ui)
    fail(http::status::not_found, "the dashboard is off: this store runs with --no-ui (StoreServerOptions::ui "
                                  "= false); start scale-store without --no-ui to serve it at /ui/");
  require(request.method(), {http::verb::get}, request, path);
  if (path == "/ui") {
    // The page's relative imports (./scale.js) resolve under /ui/ only; the query (?token=) is kept.
    auto moved = make_response(request.version(), request.keep_alive(), http::status::moved_permanently,
                               "{\"moved\":\"/ui/\"}\n");
    const std::string_view target = request.target();
    const auto question = target.find('?');
    moved.set(http::field::location,
              "/ui/" + std::string(question == std::string_view::npos ? std::string_view() : target.substr(question)));
    return moved;
  }
  const std::string_view name = path.substr(std::string_view("/ui/").size());
  const EmbeddedFile* file = find_ui_file(name);
  if (!file)
    fail(http::status::not_found, "no dashboard file at " + std::string(path) +
                                      "; the dashboard is /ui/ (it loads /ui/dashboard.js, /ui/dashboard.css and "
                                      "/ui/scale.js)");
  auto response = make_response(request.version(), request.keep_alive(), http::status::ok, std::string(file->bytes),
                                ui_content_type(file->name));
  // Revalidated on every load, so a page never outlives the binary that serves it.
  response.set(http::field::cache_control, "no-cache");
  response.set("X-Content-Type-Options", "nosniff");
  response.set("Content-Security-Policy", ui_content_security_policy);
  response.set("Referrer-Policy", "no-referrer");
  return response;
}

Future<HttpResponse> StoreRouter::handle(const HttpRequest& request) {
  http::status status = http::status::internal_server_error;
  std::string message;
  std::exception_ptr failure;  // an error of the backends (or of the request: KeyNotFound), answered by its type
  try {
    const Target target = parse_target(request.target());
    const std::string_view path = target.raw_path;
    const auto method = request.method();
    auto ok = [&](std::string body, std::string_view content_type = "application/json") {
      return make_response(request.version(), request.keep_alive(), http::status::ok, std::move(body), content_type);
    };

    if (path == "/healthz") {
      require(method, {http::verb::get}, request, path);
      if (std::exception_ptr problem = m_health ? m_health() : nullptr) {
        HttpResponse unhealthy = error_response(request.version(), request.keep_alive(), problem);
        unhealthy.result(http::status::service_unavailable);
        co_return unhealthy;
      }
      co_return ok("{\"status\":\"ok\"}\n");
    }
    if (path == "/metrics") {
      require(method, {http::verb::get}, request, path);
      co_return ok(m_metrics ? m_metrics() : std::string(), "text/plain; version=0.0.4");
    }
    if (path == "/ui" || path.starts_with("/ui/")) co_return ui_file(request, path);
    if (path == "/v1/kv") {
      require(method, {http::verb::get, http::verb::post}, request, path);
      if (method == http::verb::post) {
        json object = parse_body(request);
        if (!object.is_object()) fail(http::status::bad_request, "POST /v1/kv needs a JSON object of keys to set");
        for (const auto& [key, value] : object.items())
          if (key.empty()) fail(http::status::bad_request, "a key of the object is empty");
        Future<Revision> written = m_memory->set_many(std::move(object));
        Revision revision = co_await detail::resume_where_completed(std::move(written));
        co_return ok(revision_body(revision));
      }
      // One page at most: a whole large store built into one answer held the I/O thread and its memory.
      const std::string* prefix = target.find("prefix");
      const std::string* after = target.find("after");
      const std::string* limit_text = target.find("limit");
      std::size_t limit = store_list_page_entries;
      if (limit_text) {
        auto [end, ec] = std::from_chars(limit_text->data(), limit_text->data() + limit_text->size(), limit);
        if (ec != std::errc() || end != limit_text->data() + limit_text->size() || limit == 0)
          fail(http::status::bad_request, "'limit' must be a number of entries (1 to " +
                                              std::to_string(store_list_page_entries) + "), not '" + *limit_text + "'");
        limit = std::min(limit, store_list_page_entries);
      }
      const std::string no_prefix;
      ListPage page = m_paged->list_page(prefix ? *prefix : no_prefix, after ? *after : no_prefix, limit,
                                         store_list_page_bytes);
      const bool paged = limit_text || after;  // else the array alone, as before pages
      std::string body = paged ? "{\"entries\":[" : "[";
      for (std::size_t i = 0; i < page.entries.size(); ++i) {
        if (i > 0) body += ',';
        append_entry(body, page.entries[i]);
      }
      body += ']';
      const std::string* next = page.more ? &page.entries.back().key : nullptr;
      if (paged) {
        body += ",\"next\":";
        append_json(body, next ? json(*next) : json(nullptr));
        body += '}';
      }
      body += '\n';
      auto response = ok(std::move(body));
      if (next)
        response.set(http::field::link, "</v1/kv?prefix=" + percent_encode(prefix ? *prefix : no_prefix) +
                                            "&limit=" + std::to_string(limit) + "&after=" + percent_encode(*next) +
                                            ">; rel=\"next\"");
      co_return response;
    }
    if (path.starts_with("/v1/kv/")) {
      std::string key = path_name(path, "/v1/kv/", "key");
      if (method == http::verb::get) {
        Future<std::optional<Entry>> found = m_memory->entry(key);
        std::optional<Entry> entry = co_await detail::resume_where_completed(std::move(found));
        if (!entry) throw KeyNotFound(key);
        std::string body;
        body.reserve(64 + entry->key.size());
        append_entry(body, *entry);
        body += '\n';
        auto response = ok(std::move(body));
        response.set(http::field::etag, "\"" + std::to_string(entry->revision) + "\"");
        co_return response;
      }
      if (method == http::verb::delete_) {
        auto if_match = request.find(http::field::if_match);
        auto if_none_match = request.find(http::field::if_none_match);
        if (if_match != request.end() && if_none_match != request.end())
          fail(http::status::bad_request, "send If-Match or If-None-Match, not both");
        if (if_none_match != request.end()) {
          // Only '*' means something here: delete only when absent, i.e. refuse a present key.
          if (if_none_match->value() != "*")
            fail(http::status::bad_request, "If-None-Match accepts only '*' (refuse to delete a key that exists)");
          Future<std::optional<Entry>> found = m_memory->entry(key);
          std::optional<Entry> entry = co_await detail::resume_where_completed(std::move(found));
          if (entry)
            fail(http::status::precondition_failed,
                 "key '" + key + "' is at revision " + std::to_string(entry->revision) + " (If-None-Match: *)");
          throw KeyNotFound(key);
        }
        if (if_match != request.end()) {
          Future<Revision> named = if_match_revision(*m_memory, std::string(if_match->value()), key);
          std::optional<Revision> expected = co_await detail::resume_where_completed(std::move(named));
          Future<Revision> erasing = m_paged->erase_revision(key, *expected);
          Revision erased = co_await detail::resume_where_completed(std::move(erasing));
          if (erased == 0) {
            Future<void> refused = refuse_condition(*m_memory, key, *expected);
            co_await detail::resume_where_completed(std::move(refused));
          }
          std::string body = "{\"deleted\":";
          append_json(body, json(key));
          body += ",\"revision\":" + std::to_string(erased) + "}\n";
          co_return ok(std::move(body));
        }
        Future<bool> erasing = m_memory->erase(key);
        bool erased = co_await detail::resume_where_completed(std::move(erasing));
        if (!erased) throw KeyNotFound(key);
        std::string body = "{\"deleted\":";
        append_json(body, json(key));
        body += "}\n";
        co_return ok(std::move(body));
      }
      require(method, {http::verb::put}, request, path);
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
        Future<Revision> named = if_match_revision(*m_memory, std::string(if_match->value()), key);
        expected = co_await detail::resume_where_completed(std::move(named));
      }
      if (!expected) {
        json object = json::object();
        object.emplace(key, std::move(value));
        Future<Revision> written = m_memory->set_many(std::move(object));
        Revision revision = co_await detail::resume_where_completed(std::move(written));
        co_return ok(revision_body(revision));
      }
      Future<Revision> compared = m_memory->compare_and_set_revision(key, *expected, std::move(value));
      Revision written = co_await detail::resume_where_completed(std::move(compared));
      if (written == 0) {
        Future<void> refused = refuse_condition(*m_memory, key, *expected);
        co_await detail::resume_where_completed(std::move(refused));
      }
      co_return ok(revision_body(written));
    }
    if (path.starts_with("/v1/increment/")) {
      require(method, {http::verb::post}, request, path);
      std::string key = path_name(path, "/v1/increment/", "key");
      std::int64_t by = 1;
      if (!blank(request.body())) {
        json body = parse_body(request);
        if (!body.is_object()) fail(http::status::bad_request, "the body must be an object like {\"by\": 1}");
        if (auto amount = body.find("by"); amount != body.end()) {
          if (!amount->is_number_integer() ||
              (amount->is_number_unsigned() && !std::in_range<std::int64_t>(amount->get<std::uint64_t>())))
            fail(http::status::bad_request, "\"by\" must be a 64-bit integer, not " + amount->dump());
          by = amount->get<std::int64_t>();
        }
      }
      Future<Incremented> incrementing = m_memory->increment_with_revision(std::move(key), by);
      Incremented done = co_await detail::resume_where_completed(std::move(incrementing));
      co_return make_response(
          request.version(), request.keep_alive(), http::status::ok,
          "{\"revision\":" + std::to_string(done.revision) + ",\"value\":" + std::to_string(done.value) + "}\n");
    }
    if (path.starts_with("/v1/events/") && method == http::verb::post) {
      std::string name = path_name(path, "/v1/events/", "event name");
      json payload = blank(request.body()) ? json(nullptr) : parse_body(request);
      Future<void> emitted = m_events->emit(std::move(name), std::move(payload));
      co_await detail::resume_where_completed(std::move(emitted));
      co_return ok("{\"emitted\":true}\n");
    }
    if (is_stream(endpoint(method, path))) {
      // The server streams these itself; a caller without a stream gets the request's verdict.
      HttpResponse error;
      if (!stream_request(request, error)) co_return error;
      fail(http::status::not_implemented, std::string(path) + " is a Server-Sent Events stream, served by the server");
    }
    fail(http::status::not_found, "no such endpoint: " + std::string(path) + " (see docs/http-api.md)");
  } catch (HttpError& error) {
    status = error.status;
    message = std::move(error.message);
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) co_return error_response(request.version(), request.keep_alive(), failure);
  co_return error_response(request, status, message);
}

}  // namespace scale::detail
