// Fuzz target: bytes as they arrive on a scale-store connection -> Beast's request parser with the
// server's limits -> detail::StoreRouter -> an in-process store. The steps are the server
// session's: the head is read and judged first (check_head), then the body, then the router
// answers; pipelined requests in one input share the store. Each input runs twice, against an
// open store and against one with a token and a CORS origin, so both access paths are reached.
//
// A finding is a crash, a hang, a leak, or an answer the server must never give: a 5xx for a
// request (every bad input is the client's: 4xx) or a JSON answer that is not valid JSON.
//
// Built with libFuzzer by `make fuzz`, and with the normal compiler and fuzz/replay_main.cpp by
// the test suite, which replays fuzz/corpus/request_router/ (ctest -R fuzz_replay).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <nlohmann/json.hpp>

#include "store/store_router.hpp"

namespace {

namespace http = boost::beast::http;
using scale::detail::HttpResponse;
using scale::detail::StoreRouter;

[[noreturn]] void finding(std::string_view what, const HttpResponse& response) {
  std::fprintf(stderr, "request_router: %.*s: %u %s\n", static_cast<int>(what.size()), what.data(),
               response.result_int(), response.body().c_str());
  std::abort();
}

/// What the server may answer: a status below 500 and, for JSON, a JSON body of the right length.
void check(const HttpResponse& response) {
  if (response.result_int() >= 500) finding("a 5xx answer", response);
  if (response[http::field::content_type] == "application/json" && !response.body().empty() &&
      !nlohmann::json::accept(response.body()))
    finding("an answer that is not JSON", response);
  if (response[http::field::content_length] != std::to_string(response.body().size()))
    finding("a Content-Length that is not the body's", response);
}

/// Feeds `bytes` to `parser` until it is done or the bytes are used; false on a parse error or
/// when the input ends before the message does.
template <class Parser>
bool feed(Parser& parser, std::string_view& bytes, bool header_only) {
  boost::beast::error_code ec;
  auto done = [&] { return header_only ? parser.is_header_done() : parser.is_done(); };
  while (!done()) {
    if (bytes.empty()) {
      parser.put_eof(ec);
      return !ec && done();
    }
    std::size_t used = parser.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
    if (ec == http::error::need_more) {
      // Beast wants more bytes than there are: the connection ends here.
      ec = {};
      bytes = {};
      continue;
    }
    if (ec) return false;
    bytes.remove_prefix(used);
    if (used == 0 && !done()) return false;
  }
  return true;
}

/// One connection's worth of bytes against `router`, as the server's session handles them.
void serve(StoreRouter& router, std::string_view bytes) {
  while (!bytes.empty()) {
    http::request_parser<http::empty_body> head;
    head.header_limit(scale::detail::store_header_limit);
    head.body_limit(std::numeric_limits<std::uint64_t>::max());  // judged from Content-Length
    if (!feed(head, bytes, true)) return;                        // the server answers 400/431 and closes

    std::optional<std::uint64_t> content_length;
    if (auto length = head.content_length()) content_length = *length;
    if (auto early = router.check_head(head.get(), content_length)) {
      check(*early);
      if (!head.is_done() || !early->keep_alive()) return;  // the body is never read
      continue;
    }
    std::string_view endpoint = StoreRouter::endpoint(head.get().method(), head.get().target());

    http::request_parser<http::string_body> parser{std::move(head)};
    parser.body_limit(router.options().max_body);
    if (!feed(parser, bytes, false)) return;  // 413 past the limit, or the input ended
    scale::detail::HttpRequest request = parser.release();

    if (StoreRouter::is_stream(endpoint)) {
      HttpResponse error;
      if (router.stream_request(request, error)) return;  // the server streams and the connection ends
      check(error);
      if (!error.keep_alive()) return;
      continue;
    }
    HttpResponse response = router.handle(request).get();
    check(response);
    if (!response.keep_alive()) return;
  }
}

void run(std::string_view bytes, bool guarded) {
  scale::StoreServerOptions options;
  options.history = 16;  // small, so that a watch from an old revision is compacted
  options.max_body = 64 * 1024;
  if (guarded) {
    options.token = "s3cret";
    options.cors_origin = "https://app.example";
  }
  StoreRouter router(scale::detail::make_in_process_memory({.history = options.history}),
                     scale::detail::make_in_process_events(), options,
                     [] { return std::string("# metrics of the server\n"); });
  serve(router, bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  run(bytes, false);
  run(bytes, true);
  return 0;
}
