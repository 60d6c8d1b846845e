#pragma once
// How much bench/future and its Asio peer (bench/peers/future_asio.cpp) each measure, and how a
// figure is made of a time: the same on both sides.

#include <chrono>

namespace scale_bench::future_counts {

constexpr int round_trips = 1'000'000;  ///< coroutine and Promise (post) round trips per round
constexpr int chain_length = 1'000;     ///< steps per chain
constexpr int chains = 200;             ///< chains per round

/// Nanoseconds per item of `elapsed` over `count` items.
inline double ns_per(std::chrono::steady_clock::duration elapsed, int count) {
  return std::chrono::duration<double, std::nano>(elapsed).count() / count;
}

}  // namespace scale_bench::future_counts
