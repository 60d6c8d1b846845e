#pragma once
// How much bench/future and its Asio peer (bench/peers/future_asio.cpp) each measure: the same
// counts on both sides.

namespace scale_bench::future_counts {

constexpr int round_trips = 1'000'000;  ///< coroutine and Promise (post) round trips per round
constexpr int chain_length = 1'000;     ///< steps per chain
constexpr int chains = 200;             ///< chains per round

}  // namespace scale_bench::future_counts
