// scale::Future's own cost beside Boost.Asio's coroutines, measured in the same run, both on one
// thread (scale's loop; an io_context run by this thread):
//   - one round trip: a coroutine creates a child that completes at once and awaits it
//     (scale: co_await child(), the child a Future coroutine; asio: co_await co_spawn(child,
//     use_awaitable)), in ns;
//   - a Promise round trip: create a Promise, complete it, await its Future (asio: post a
//     completion and await it with use_awaitable), in ns;
//   - a chain of 1,000 `then`s on a ready Future, each step a continuation (asio: 1,000 handlers,
//     each posting the next), in us.
// Targets (reported, not asserted): a round trip <= 60 ns, and each figure <= asio's (ratio <= 1).
// Asio runs in its own program at its defaults (bench/peers/future_asio.cpp, why there), once per
// round, between scale's rounds.
//
//   make bench        (or: build/bench/future)

#include <scale/future.hpp>
#include <scale/runtime.hpp>

#include "support/future_counts.hpp"
#include "support/results.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace {

using Clock = std::chrono::steady_clock;
using namespace scale_bench::future_counts;

constexpr int rounds = 5;

// ---- scale ----

scale::Future<int> scale_child(int x) { co_return x + 1; }

scale::Future<double> scale_round_trips() {
  const auto start = Clock::now();
  long sum = 0;
  for (int i = 0; i < round_trips; ++i) sum += co_await scale_child(i);
  const double ns = ns_per(Clock::now() - start, round_trips);
  if (sum == 0) std::printf("(unexpected sum)\n");
  co_return ns;
}

scale::Future<double> scale_promise_round_trips() {
  const auto start = Clock::now();
  long sum = 0;
  for (int i = 0; i < round_trips; ++i) {
    scale::Promise<int> promise;
    scale::Future<int> future = promise.get_future();
    promise.set_value(i);
    sum += co_await std::move(future);
  }
  const double ns = ns_per(Clock::now() - start, round_trips);
  if (sum == 0) std::printf("(unexpected sum)\n");
  co_return ns;
}

scale::Future<double> scale_then_chains() {
  const auto start = Clock::now();
  for (int c = 0; c < chains; ++c) {
    scale::Future<int> future = scale::make_ready_future(0);
    for (int i = 0; i < chain_length; ++i) future = std::move(future).then([](int x) { return x + 1; });
    const int last = co_await std::move(future);
    if (last != chain_length) std::printf("(chain ended at %d)\n", last);
  }
  co_return ns_per(Clock::now() - start, chains) / 1000.0;  // us per chain
}

/// One round of the peer (bench/peers/future_asio.cpp, its own process): its three figures.
struct AsioRound {
  double round_trip_ns = 0, post_ns = 0, chain_us = 0;
};
AsioRound asio_round() {
  FILE* peer = popen(SCALE_BENCH_FUTURE_ASIO, "r");
  AsioRound round;
  if (peer == nullptr || std::fscanf(peer, "%lf %lf %lf", &round.round_trip_ns, &round.post_ns, &round.chain_us) != 3) {
    std::fprintf(stderr, "future: the Asio peer (%s) gave no figures\n", SCALE_BENCH_FUTURE_ASIO);
    std::exit(1);
  }
  if (pclose(peer) != 0) {
    std::fprintf(stderr, "future: the Asio peer (%s) failed\n", SCALE_BENCH_FUTURE_ASIO);
    std::exit(1);
  }
  return round;
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);

  double scale_rt = 1e30, scale_promise = 1e30, scale_chain = 1e30;
  double asio_rt = 1e30, asio_post = 1e30, asio_chain = 1e30;
  for (int r = 0; r < rounds; ++r) {  // interleaved, best of each
    scale_rt = std::min(scale_rt, runtime.run([] { return scale_round_trips(); }));
    scale_promise = std::min(scale_promise, runtime.run([] { return scale_promise_round_trips(); }));
    scale_chain = std::min(scale_chain, runtime.run([] { return scale_then_chains(); }));
    const AsioRound asio = asio_round();
    asio_rt = std::min(asio_rt, asio.round_trip_ns);
    asio_post = std::min(asio_post, asio.post_ns);
    asio_chain = std::min(asio_chain, asio.chain_us);
  }

  std::printf("Future, one thread, best of %d             scale        asio         ratio  target\n", rounds);
  std::printf("coroutine round trip (create, complete, await) %7.1f ns  %7.1f ns  %5.2fx  <= 1x, <= 60 ns\n",
              scale_rt, asio_rt, scale_rt / asio_rt);
  std::printf("Promise round trip (set_value, await)          %7.1f ns  %7.1f ns  %5.2fx  <= 1x (asio: post)\n",
              scale_promise, asio_post, scale_promise / asio_post);
  std::printf("chain of 1,000 then                            %7.1f us  %7.1f us  %5.2fx  <= 1x (asio: posted handlers)\n",
              scale_chain, asio_chain, scale_chain / asio_chain);

  scale_bench::record({"future", "coroutine round trip", "ns", scale_rt, "asio co_spawn + use_awaitable", asio_rt,
                       "<=", 1.0});
  scale_bench::record({"future", "coroutine round trip, absolute", "ns", scale_rt, "target 60 ns", 60.0, "<=", 1.0});
  scale_bench::record(
      {"future", "Promise round trip", "ns", scale_promise, "asio post + use_awaitable", asio_post, "<=", 1.0});
  scale_bench::record(
      {"future", "chain of 1,000 then", "us", scale_chain, "asio 1,000 posted handlers", asio_chain, "<=", 1.0});
  return 0;
}
