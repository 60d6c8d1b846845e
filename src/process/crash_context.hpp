#pragma once
// What a worker process's crash handler needs to know of the task running now: set by the task's
// ChunkControl as the chunk starts and ends, read by the signal handler (async-signal-safe: plain
// atomics, no allocation, no lock).

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace scale::detail {

struct RunningTask {
  bool running = false;
  std::uint64_t task_id = 0;  ///< the task frame's id (the parent's key for the chunk)
  std::size_t item = 0;       ///< the index, within the chunk, of the item running now
};

/// A task starts on this process; `item` is where its running item's index is kept.
void set_running_task(std::uint64_t task_id, const std::atomic<std::size_t>* item) noexcept;
/// The task ended.
void clear_running_task() noexcept;
/// The task running now; async-signal-safe.
RunningTask running_task() noexcept;

}  // namespace scale::detail
