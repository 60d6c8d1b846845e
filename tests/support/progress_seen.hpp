#pragma once
// Progress from inside an item, checked without timing: each item reports half of itself and then
// waits until the caller's on_progress has seen a fraction within an item (the callback writes
// `seen_within` into the scope's memory), so a report that falls inside an item is an event the
// test waits for, not a race between the item's length and the 100 ms report interval.

#include <scale/progress.hpp>
#include <scale/scope.hpp>
#include <scale/shared_memory.hpp>
#include <scale/sleep_for.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <vector>

namespace support {

/// Reports 0.5, waits (up to 20 s) for `seen_within` in the scope, then reports 1 and returns x.
inline constexpr auto half_until_seen = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scope.progress(0.5);
  for (int i = 0; i < 20'000; ++i) {
    scale::Future<std::optional<scale::Entry>> seen = scope.entry("seen_within");
    if (co_await std::move(seen)) break;
    scale::Future<void> pause = scale::sleep_for(std::chrono::milliseconds(1));
    co_await std::move(pause);
  }
  scope.progress(1.0);
  co_return x;
};

/// True when a report counts more than its finished items, i.e. it includes a running item's fraction.
inline bool within_an_item(const scale::Progress& progress) {
  return progress.fraction * static_cast<double>(progress.items_total) > static_cast<double>(progress.items_done) + 1e-6;
}

/// The on_progress side: records every report and, at the first one within an item, tells the
/// items through `memory`. Call `finish()` after the map to wait for that write.
class ProgressSeen {
 public:
  explicit ProgressSeen(scale::SharedMemory memory) : m_memory(std::move(memory)) {}

  void operator()(const scale::Progress& progress) {
    reports.push_back(progress);
    if (!m_told && within_an_item(progress)) {
      m_told = true;
      m_write.emplace(m_memory.set("seen_within", true));
    }
  }

  /// Whether any report fell within an item; waits for the write that said so.
  bool finish() {
    if (m_write) m_write->get();
    return m_told;
  }

  std::vector<scale::Progress> reports;

 private:
  scale::SharedMemory m_memory;
  bool m_told = false;
  std::optional<scale::Future<scale::Revision>> m_write;
};

}  // namespace support
