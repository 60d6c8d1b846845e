#pragma once
/// \file scale::Progress: how far a running call has got (RunOptions::on_progress).

#include <chrono>
#include <cstddef>
#include <optional>

#include <nlohmann/json.hpp>

namespace scale {

/// What RunOptions::on_progress receives, on the loop, at most every 100 ms while a call runs
/// and exactly once when it completes (then fraction is 1 and items_done == items_total).
struct Progress {
  std::size_t items_done = 0;   ///< items of finished chunks
  std::size_t items_total = 0;  ///< items of the call
  /// Items done plus what running items reported through Scope::progress, over items_total;
  /// never decreases, so a map of a few long items moves smoothly.
  double fraction = 0;
  std::chrono::milliseconds elapsed{0};  ///< since the call started
  /// Time left at the rate so far; none before anything has progressed.
  std::optional<std::chrono::milliseconds> eta;
  std::size_t workers = 0;  ///< workers alive at the manager now
};

/// {"items_done", "items_total", "fraction", "elapsed_ms", "eta_ms" (null when unknown), "workers"}.
inline void to_json(nlohmann::json& out, const Progress& progress) {
  out = nlohmann::json{{"items_done", progress.items_done},
                       {"items_total", progress.items_total},
                       {"fraction", progress.fraction},
                       {"elapsed_ms", progress.elapsed.count()},
                       {"eta_ms", progress.eta ? nlohmann::json(progress.eta->count()) : nlohmann::json(nullptr)},
                       {"workers", progress.workers}};
}

}  // namespace scale
