#include "core/scaling_controller.hpp"

#include <algorithm>

namespace scale::detail {

ScalingController::ScalingController(ScalingPolicy policy, std::size_t cap) : m_policy(policy) {
  m_policy.validate();
  cap = std::max<std::size_t>(cap, 1);
  m_max = m_policy.max == 0 ? cap : std::min(m_policy.max, cap);
  m_policy.min = std::min(m_policy.min, m_max);
}

std::size_t ScalingController::wanted(std::size_t backlog) const noexcept {
  const std::size_t per = m_policy.backlog_per_worker;
  return std::clamp((backlog + per - 1) / per, m_policy.min, m_max);
}

std::size_t ScalingController::step(Clock::time_point now, std::size_t target, std::size_t backlog) {
  const std::size_t want = wanted(backlog);
  if (want > target) {
    m_down_since.reset();
    if (!m_up_since) m_up_since = now;
    if (now - *m_up_since >= m_policy.scale_up_after) {
      m_up_since.reset();
      return want;
    }
    return target;
  }
  m_up_since.reset();
  if (want == target) {
    m_down_since.reset();
    return target;
  }
  if (!m_down_since) {
    m_down_since = now;
    m_down_peak = want;
  }
  m_down_peak = std::max(m_down_peak, want);
  if (now - *m_down_since >= m_policy.scale_down_after) {
    const std::size_t shrunk = m_down_peak;
    // NOTE: when even fewer are wanted now, the next window opens at once, so next_deadline()
    // keeps a manager stepping down without waiting for another event.
    if (want < shrunk) {
      m_down_since = now;
      m_down_peak = want;
    } else {
      m_down_since.reset();
    }
    return shrunk;
  }
  return target;
}

std::optional<ScalingController::Clock::time_point> ScalingController::next_deadline() const noexcept {
  if (m_up_since) return *m_up_since + m_policy.scale_up_after;
  if (m_down_since) return *m_down_since + m_policy.scale_down_after;
  return std::nullopt;
}

}  // namespace scale::detail
