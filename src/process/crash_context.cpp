// The running task as the crash handler sees it (process/crash_context.hpp).

#include "process/crash_context.hpp"

#include <atomic>

namespace scale::detail {

namespace {

std::atomic<const std::atomic<std::size_t>*> g_item{nullptr};
std::atomic<std::uint64_t> g_task_id{0};

}  // namespace

void set_running_task(std::uint64_t task_id, const std::atomic<std::size_t>* item) noexcept {
  g_task_id.store(task_id, std::memory_order_relaxed);
  g_item.store(item, std::memory_order_release);
}

void clear_running_task() noexcept { g_item.store(nullptr, std::memory_order_release); }

RunningTask running_task() noexcept {
  const std::atomic<std::size_t>* item = g_item.load(std::memory_order_acquire);
  if (item == nullptr) return {};
  return RunningTask{true, g_task_id.load(std::memory_order_relaxed), item->load(std::memory_order_relaxed)};
}

}  // namespace scale::detail
