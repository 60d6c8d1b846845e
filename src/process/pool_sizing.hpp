#pragma once
// PoolSizing: how many workers a process pool is moving to, in one of three modes.
//
//   on demand  (no resize/adapt yet) workers are spawned for queued chunks up to max_workers and
//              leave after idle_timeout, keeping min_workers; concurrency() is max_workers, the
//              reported target is what the queue wants (busy workers + queued chunks, clamped
//              to [min_workers, max_workers]).
//   fixed      (resize(n)) n workers, capped at max_workers; no idle_timeout, no min_workers.
//   adapt      (adapt(policy)) the ScalingController's target for the backlog; its
//              scale_down_after replaces idle_timeout, its min replaces min_workers.
// In the last two, concurrency() is the target. The pool applies the target (spawns, retires);
// this class only decides it. Guarded by the pool's lock.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <optional>

#include "core/scaling_controller.hpp"

namespace scale::detail {

class PoolSizing {
 public:
  enum class Mode { on_demand, fixed, adapt };
  using Clock = std::chrono::steady_clock;

  explicit PoolSizing(std::size_t max_workers) noexcept : m_max(max_workers) {}

  Mode mode() const noexcept { return m_mode; }
  std::size_t max_workers() const noexcept { return m_max; }
  /// The count the pool moves to (fixed, adapt); in on-demand mode what on_demand() last set.
  std::size_t target() const noexcept { return m_target; }
  /// What the dispatch sizes its lanes by: max_workers on demand (workers are spawned for what
  /// is queued), the target otherwise.
  std::size_t concurrency() const noexcept { return m_mode == Mode::on_demand ? m_max : m_target; }

  /// resize(n): a fixed count, adapt off.
  void set_fixed(std::size_t n) noexcept {
    m_mode = Mode::fixed;
    m_controller.reset();
    m_target = std::min(n, m_max);
  }

  /// adapt(policy): starts from the workers there are now (within the policy's bounds); the
  /// next step() moves from there. Throws std::invalid_argument for an invalid policy, leaving
  /// the mode as it was.
  void set_adapt(const ScalingPolicy& policy, std::size_t live) {
    ScalingController controller(policy, m_max);
    m_target = std::clamp(live, controller.policy().min, controller.max());
    m_controller.emplace(std::move(controller));
    m_mode = Mode::adapt;
  }

  /// Adapt mode: the new target for `backlog` chunks. Returns true when it changed.
  bool step(Clock::time_point now, std::size_t backlog) {
    if (m_mode != Mode::adapt) return false;
    const std::size_t next = m_controller->step(now, m_target, backlog);
    if (next == m_target) return false;
    m_target = next;
    return true;
  }

  /// Adapt mode: when step() must run again though nothing happened (a window ends).
  std::optional<Clock::time_point> next_deadline() const noexcept {
    if (m_mode != Mode::adapt) return std::nullopt;
    return m_controller->next_deadline();
  }

  /// On-demand mode: records what the queue wants, for stats().
  void on_demand(std::size_t wanted, std::size_t min_workers) noexcept {
    if (m_mode == Mode::on_demand) m_target = std::clamp(wanted, std::min(min_workers, m_max), m_max);
  }

 private:
  Mode m_mode = Mode::on_demand;
  std::size_t m_max;
  std::size_t m_target = 0;
  std::optional<ScalingController> m_controller;
};

}  // namespace scale::detail
