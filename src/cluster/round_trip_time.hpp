#pragma once
// RoundTripTime: a cluster worker's smoothed round trip to Redis, which its heartbeat record
// carries (cluster/worker_record.hpp) and ClusterManager::workers() shows as ClusterWorker::rtt.
//
// Why it is measured this way:
//   - The sample is the heartbeat's own SET: a cheap command the worker sends every interval
//     anyway, so measuring costs nothing extra, and it goes on the commands connection, where the
//     worker's results go too, so it says what a result waits as well as what the wire takes.
//   - Smoothed as TCP smooths its RTT (RFC 6298: srtt += (sample - srtt) / 8), so one late beat
//     (a pause, a burst of results ahead of it) moves the figure by an eighth, not all the way;
//     the first sample is taken as it is.
//   - Atomic: sampled on the client's I/O thread, read wherever the record is written.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace scale::detail {

class RoundTripTime {
 public:
  /// Adds one measured round trip.
  void sample(std::chrono::steady_clock::duration took) noexcept {
    const std::int64_t us =
        std::max<std::int64_t>(1, std::chrono::duration_cast<std::chrono::microseconds>(took).count());
    const std::int64_t now = m_us.load(std::memory_order_relaxed);
    m_us.store(now == 0 ? us : now + (us - now) / 8, std::memory_order_relaxed);
  }
  /// The smoothed round trip in microseconds; 0 before the first sample.
  std::int64_t microseconds() const noexcept { return m_us.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> m_us{0};
};

}  // namespace scale::detail
