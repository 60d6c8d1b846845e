#pragma once
// ServedTime: the share of the workers' time a ClusterManager has had lately, which it publishes
// in its demand (cluster/assignment.hpp) for the matcher's tie-break: among managers equally near,
// a worker prefers the one served less (core/stable_match.hpp, path_rankings).
//
// Why it is kept this way:
//   - The time is what the workers say they ran each chunk (the "t" of a result), not the time
//     from queueing to result, which would count the wait in the stream as service.
//   - "Lately" is an exponential decay with a time constant of a few matcher scans: long enough
//     that one scan's luck does not flip the order, short enough that a manager which had every
//     worker for a while does not keep a newcomer first for long (the newcomer catches up to an
//     even share, not to an even total).
//   - The share is the decayed rate (worker-seconds per second) over the worker slots live now,
//     so it is a fraction in [0, 1] (a little above when slots just left) that managers compare
//     without knowing each other's rates.
//   - One multiplication and one exp() per result; the manager calls it under its lock.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>

namespace scale::detail {

class ServedTime {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ServedTime(Clock::duration time_constant) : m_tau(std::chrono::duration<double>(time_constant).count()) {}

  /// A chunk of this manager ran `took` on a worker; its result came at `now`.
  void add(std::chrono::microseconds took, Clock::time_point now) {
    decay_to(now);
    m_sum += std::chrono::duration<double>(took).count();
  }

  /// The fraction of `slots` worker slots this manager has had lately (0 with no slots).
  double share(std::size_t slots, Clock::time_point now) {
    decay_to(now);
    if (slots == 0 || m_tau <= 0) return 0;
    const double share = m_sum / m_tau / static_cast<double>(slots);
    return std::isfinite(share) ? std::max(0.0, share) : 0.0;
  }

 private:
  void decay_to(Clock::time_point now) {
    if (m_at != Clock::time_point{} && now > m_at)
      m_sum *= std::exp(-std::chrono::duration<double>(now - m_at).count() / m_tau);
    m_at = std::max(m_at, now);
  }

  double m_tau;     // seconds
  double m_sum = 0;  // decayed worker-seconds
  Clock::time_point m_at{};
};

}  // namespace scale::detail
