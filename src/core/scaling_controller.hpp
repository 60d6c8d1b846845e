#pragma once
// ScalingController: the one decision rule behind ScalingPolicy, shared by the thread pool, the
// process pool and the cluster's desired_workers(). It only computes a target; each manager
// starts and retires its own workers to reach it.
//
// Why it looks like this:
//   - wanted = ceil(backlog / backlog_per_worker), clamped to [min, cap]. The backlog is in chunks
//     of each call's current size (ScalabilityManager::backlog()), so a call that has not yet cut
//     its items still counts, and adapt can grow past the chunks in flight.
//   - Up fast: once wanted > target has held for scale_up_after (0: at once).
//   - Down slowly: once wanted < target has held for the whole scale_down_after window, straight
//     to the highest count wanted during that window (a dip in the middle of a burst does not
//     shed the workers the burst is about to need again).
//   - Never both in one step: a step that grows resets the down window, and the other way round.

#include <chrono>
#include <cstddef>
#include <optional>

#include <scale/scaling_policy.hpp>

namespace scale::detail {

class ScalingController {
 public:
  using Clock = std::chrono::steady_clock;

  /// `cap` bounds max (the manager's max_workers); policy.max 0 means cap. Throws
  /// std::invalid_argument for a policy that validate() refuses.
  ScalingController(ScalingPolicy policy, std::size_t cap);

  /// The target after seeing `backlog` chunks at `now`, given the current `target`.
  std::size_t step(Clock::time_point now, std::size_t target, std::size_t backlog);

  /// The count `backlog` asks for, before any window: clamp(ceil(backlog / per worker), min, max).
  std::size_t wanted(std::size_t backlog) const noexcept;

  /// When step() should be called again even if the backlog does not change (a window ends), or
  /// none when no window is open.
  std::optional<Clock::time_point> next_deadline() const noexcept;

  const ScalingPolicy& policy() const noexcept { return m_policy; }
  std::size_t max() const noexcept { return m_max; }

 private:
  ScalingPolicy m_policy;
  std::size_t m_max;
  std::optional<Clock::time_point> m_up_since;    // wanted > target since then
  std::optional<Clock::time_point> m_down_since;  // wanted < target since then
  std::size_t m_down_peak = 0;                    // the highest wanted since m_down_since
};

}  // namespace scale::detail
