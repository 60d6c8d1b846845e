#pragma once
// How a benchmark stops a child it started: by its pid, politely first.

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <thread>

namespace bench {

/// SIGTERM, then SIGKILL after `grace`, to the child `pid`; waits for it.
inline void stop_child(pid_t pid, std::chrono::milliseconds grace) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

}  // namespace bench
