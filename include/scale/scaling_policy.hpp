#pragma once
/// \file scale::ScalingPolicy: how a manager's worker count follows its backlog (`adapt`).

#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace scale {

/// How many workers a manager wants for its backlog; meant for designated initialisers:
/// `pool.adapt({.min = 0, .max = 8})`. The backlog is what the running calls still have to run:
/// their unfinished items, counted in chunks of each call's current chunk size. The manager
/// grows as soon as the backlog per worker exceeds `backlog_per_worker` (once that has held for
/// `scale_up_after`), and shrinks only after a lower count has held for the whole
/// `scale_down_after` window, straight to the highest count wanted during that window. It never
/// grows and shrinks in one step, and only idle workers retire.
struct ScalingPolicy {
  std::size_t min = 0;                                 ///< workers kept even with no backlog
  std::size_t max = 0;                                 ///< the most workers; 0: the manager's own cap
  std::size_t backlog_per_worker = 2;                  ///< chunks of backlog one worker is meant to carry
  std::chrono::milliseconds scale_up_after{0};         ///< a higher count must hold this long before growing
  std::chrono::milliseconds scale_down_after{10'000};  ///< a lower count must hold this long before shrinking

  /// Throws std::invalid_argument naming the field that is wrong.
  void validate() const {
    if (max != 0 && min > max)
      throw std::invalid_argument("scale::ScalingPolicy: min (" + std::to_string(min) + ") is above max (" +
                                  std::to_string(max) + "); set min <= max, or max = 0 for the manager's own cap");
    if (backlog_per_worker == 0)
      throw std::invalid_argument("scale::ScalingPolicy: backlog_per_worker is 0; give the chunks one worker should "
                                  "carry (2 by default)");
    if (scale_up_after.count() < 0)
      throw std::invalid_argument("scale::ScalingPolicy: scale_up_after is negative; use 0ms to grow at once");
    if (scale_down_after.count() <= 0 && min != max)
      throw std::invalid_argument("scale::ScalingPolicy: scale_down_after is zero; the pool would shrink the moment "
                                  "a chunk finishes. Give a window (10s by default), or set min == max");
  }
};

}  // namespace scale
