// The table of child pids (process/child_registry.hpp): a fixed array of atomics, so a signal
// handler reads it without a lock. A process with more children than slots leaves the rest to
// the link: a worker exits when its link reads end-of-file, which the parent's exit causes.

#include "process/child_registry.hpp"

#include <signal.h>

#include <atomic>
#include <cstddef>

namespace scale::detail {

namespace {

constexpr std::size_t slots = 4096;
std::atomic<pid_t> g_children[slots];  // 0: free

}  // namespace

void remember_child(pid_t pid) noexcept {
  for (auto& slot : g_children) {
    pid_t expected = 0;
    if (slot.compare_exchange_strong(expected, pid, std::memory_order_acq_rel)) return;
  }
}

void forget_child(pid_t pid) noexcept {
  for (auto& slot : g_children) {
    pid_t expected = pid;
    if (slot.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) return;
  }
}

void kill_remembered_children() noexcept {
  for (auto& slot : g_children) {
    const pid_t pid = slot.load(std::memory_order_acquire);
    if (pid > 0) ::kill(pid, SIGKILL);
  }
}

}  // namespace scale::detail
