// Fuzz target: a whole scale-store connection without its socket. The bytes go through
// detail::RequestReader (Beast's parser with the server's limits: header bytes and fields counted
// across reads, the Transfer-Encoding check, chunked bodies, the body limit) and then
// detail::StoreRouter, exactly as the server's session does, pipelined requests sharing one store.
// The first byte of an input picks the size of the pieces the rest arrives in (as reads from a
// socket would), since the limits must hold however the bytes are split.
//
// A finding is a crash, a hang, a leak, a head let through with more fields than the limit, or an
// answer the server must never give: a 5xx other than 501 (an unsupported Transfer-Encoding), a
// JSON answer that is not valid JSON, or a Content-Length that is not the body's.
//
// Built with libFuzzer by `make fuzz`, and with the normal compiler and fuzz/replay_main.cpp by
// the test suite, which replays fuzz/corpus/connection/ (ctest -R fuzz_replay).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "store/request_reader.hpp"
#include "store/store_router.hpp"

namespace {

namespace http = boost::beast::http;
using scale::detail::HttpResponse;
using scale::detail::RequestReader;
using scale::detail::StoreRouter;
using State = RequestReader::State;

[[noreturn]] void finding(std::string_view what, unsigned status, std::string_view body) {
  std::fprintf(stderr, "connection: %.*s: %u %.*s\n", static_cast<int>(what.size()), what.data(), status,
               static_cast<int>(body.size()), body.data());
  std::abort();
}

/// `refusal`: an answer the reader owes (then 501 is allowed: a Transfer-Encoding not understood).
void check(const HttpResponse& response, bool refusal = false) {
  const unsigned status = response.result_int();
  if (status >= 500 && !(refusal && status == 501)) finding("a 5xx answer", status, response.body());
  if (refusal && status < 400) finding("a refusal that is not an error", status, response.body());
  if (response[http::field::content_type] == "application/json" && !response.body().empty() &&
      !nlohmann::json::accept(response.body()))
    finding("an answer that is not JSON", response.result_int(), response.body());
  if (response[http::field::content_length] != std::to_string(response.body().size()))
    finding("a Content-Length that is not the body's", response.result_int(), response.body());
}

/// Runs `reader` until it has something other than need_more, feeding it `bytes` in pieces.
State advance(RequestReader& reader, std::string_view& bytes, std::size_t piece) {
  for (;;) {
    State state = reader.parse();
    if (state != State::need_more) return state;
    if (bytes.empty()) {
      reader.eof();
      continue;
    }
    auto room = reader.prepare();
    if (room.size() == 0) finding("a reader with no room and nothing to say", 0, {});
    std::size_t n = std::min({piece, bytes.size(), room.size()});
    std::memcpy(room.data(), bytes.data(), n);
    reader.commit(n);
    bytes.remove_prefix(n);
  }
}

/// One connection's worth of bytes against `router`, as the server's session handles them.
void serve(StoreRouter& router, std::string_view bytes, std::size_t piece) {
  RequestReader reader(router.options().max_body);
  for (;;) {
    State state = advance(reader, bytes, piece);
    if (state == State::closed) return;
    if (state == State::refused) {
      check(router.error_response(11, false, reader.refusal_status(), reader.refusal()),
            true);  // as the server answers
      return;
    }
    if (state != State::head) finding("a reader state out of order", 0, {});
    const auto& head = reader.head();
    if (static_cast<std::size_t>(std::distance(head.begin(), head.end())) > scale::detail::store_field_limit)
      finding("a head with more fields than the limit", 0, {});
    std::string_view endpoint = StoreRouter::endpoint(head.method(), head.target());
    if (auto early = router.check_head(head, reader.content_length())) {
      check(*early);
      if (reader.body_pending() || !early->keep_alive()) return;  // the body is never read
      reader.next();
      continue;
    }
    reader.read_body();
    state = advance(reader, bytes, piece);
    if (state == State::refused) continue;  // judged above, on the next turn
    if (state != State::request) return;
    scale::detail::HttpRequest request = reader.take();
    if (StoreRouter::is_stream(endpoint)) {
      HttpResponse error;
      if (reader.head_only() || router.stream_request(request, error)) return;  // streamed: the connection ends
      check(error);
      if (!error.keep_alive()) return;
      continue;
    }
    HttpResponse response = router.handle(request).get();
    check(response);
    if (!response.keep_alive()) return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // 0: the whole input in one piece; else pieces of 1 to 255 bytes.
  std::size_t piece = data[0] == 0 ? size : data[0];
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  scale::StoreServerOptions options;
  options.history = 16;
  options.max_body = 4 * 1024;  // small, so that a corpus input of a few KiB goes past it
  StoreRouter router(scale::detail::make_in_process_memory({.history = options.history}),
                     scale::detail::make_in_process_events(), options,
                     [] { return std::string("# metrics of the server\n"); });
  serve(router, bytes, piece);
  return 0;
}
