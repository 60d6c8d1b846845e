#pragma once
// CrashTrackingControl: the ChunkControl that tells the crash handler which item of which task
// runs (crash_context.hpp), and nothing else: no stop request reaches it and its progress goes
// nowhere, as for a worker-side chunk without one.
//
// Two users. A process-pool worker's task, until the link's own per-task control (which adds stop
// and progress frames and calls the same set_running_task()) replaces it in worker_link.cpp. And a
// --scale-processes cluster worker's child (cluster/chunk_runner.cpp), which runs a whole cluster
// chunk inside one item of its pool's task: there it points the handler at the item of the
// cluster chunk, under the pool task's id, so that the capsule's index is the one within the
// cluster chunk (the pool's task has one item, at 0).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "process/crash_context.hpp"
#include <scale/detail/chunk_control.hpp>

namespace scale::detail {

class CrashTrackingControl final : public ChunkControl {
 public:
  explicit CrashTrackingControl(std::uint64_t task_id) noexcept : ChunkControl(&m_never), m_task_id(task_id) {}

  void progress(double) noexcept override {}
  bool first_bad_progress() noexcept override { return !std::exchange(m_bad_progress_seen, true); }
  void started(const std::size_t* item) noexcept override { set_running_task(m_task_id, item); }
  void ended() noexcept override { clear_running_task(); }

 private:
  std::atomic<bool> m_never{false};
  std::uint64_t m_task_id;
  bool m_bad_progress_seen = false;
};

}  // namespace scale::detail
