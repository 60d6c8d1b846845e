// The peer of bench/future: Boost.Asio's coroutines and handlers on one thread, at Asio's
// defaults. Its own program, not linked with scale: the scale library builds Asio with
// BOOST_ASIO_DISABLE_THREAD_KEYWORD_EXTENSION (CMakeLists.txt), which every translation unit of a
// program linked with it must share, and which slows Asio's per-thread recycling cache. Run by
// bench/future once per round; prints one line: the coroutine round trip (ns), the post round
// trip (ns), and a chain of 1,000 posted handlers (us).

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdio>
#include <functional>

#include "../support/future_counts.hpp"

namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using namespace scale_bench::future_counts;

asio::awaitable<int> asio_child(int x) { co_return x + 1; }

double asio_round_trips(asio::io_context& io) {
  double ns = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const auto start = Clock::now();
        long sum = 0;
        for (int i = 0; i < round_trips; ++i) sum += co_await asio::co_spawn(io, asio_child(i), asio::use_awaitable);
        ns = ns_per(Clock::now() - start, round_trips);
        if (sum == 0) std::printf("(unexpected sum)\n");
      },
      asio::detached);
  io.run();
  io.restart();
  return ns;
}

double asio_post_round_trips(asio::io_context& io) {
  double ns = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const auto start = Clock::now();
        for (int i = 0; i < round_trips; ++i) co_await asio::post(io, asio::use_awaitable);
        ns = ns_per(Clock::now() - start, round_trips);
      },
      asio::detached);
  io.run();
  io.restart();
  return ns;
}

double asio_handler_chains(asio::io_context& io) {
  const auto start = Clock::now();
  for (int c = 0; c < chains; ++c) {
    int value = 0;
    std::function<void()> step = [&] {
      if (++value < chain_length) asio::post(io, step);
    };
    asio::post(io, step);
    io.run();
    io.restart();
    if (value != chain_length) std::printf("(asio chain ended at %d)\n", value);
  }
  return ns_per(Clock::now() - start, chains) / 1000.0;
}

}  // namespace

int main() {
  asio::io_context io(1);
  const double round_trip = asio_round_trips(io);
  const double posted = asio_post_round_trips(io);
  const double chain = asio_handler_chains(io);
  std::printf("%.3f %.3f %.3f\n", round_trip, posted, chain);
  return 0;
}
