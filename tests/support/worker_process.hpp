#pragma once
// A ClusterManager worker of the test's (or benchmark's) own: this very executable, or another
// program, started with --scale-worker URL, stopped by its pid when the object goes, and killed
// when this process dies. Also the short heartbeats the cluster tests give their workers.

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "spawn.hpp"

namespace support {

// Short heartbeats, so that a lost worker is noticed within about 600 ms. A sanitizer's build runs
// several times slower (TSan most), so there they are three times as long, or a busy machine's
// late beat would count a live worker as lost.
#ifdef SCALE_TEST_SANITIZER
inline constexpr int beat_scale = 3;
#else
inline constexpr int beat_scale = 1;
#endif
inline constexpr std::chrono::milliseconds test_heartbeat{100 * beat_scale};
inline constexpr std::chrono::milliseconds test_heartbeat_ttl{500 * beat_scale};

/// CLOCK_MONOTONIC in microseconds: the same clock in every process of this machine, so a
/// worker's timestamps compare with its parent's.
inline std::int64_t monotonic_us() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::int64_t>(now.tv_sec) * 1'000'000 + now.tv_nsec / 1000;
}

/// How a WorkerProcess is started and stopped.
struct WorkerOptions {
  std::string executable = "/proc/self/exe";  ///< another build's worker program, say
  std::vector<std::string> extra;              ///< flags after --scale-worker URL
  std::string stderr_file;                     ///< when set, the worker's stderr goes there
  /// Passed as --scale-heartbeat-ms; 0 passes nothing (the worker's default, 1 s).
  std::chrono::milliseconds heartbeat = test_heartbeat;
  /// 0: stop() kills at once. Otherwise SIGTERM first, and SIGKILL only if it has not exited
  /// within this long (a worker that finishes its chunks and leaves).
  std::chrono::milliseconds stop_grace{0};
};

/// A worker process: `options.executable` with --scale-worker URL (and the heartbeat and extra
/// flags), stopped by its pid when the object goes (and killed when this process dies).
class WorkerProcess {
 public:
  explicit WorkerProcess(const std::string& url, WorkerOptions options = {})
      : m_stop_grace(options.stop_grace), m_started_us(monotonic_us()) {
    std::vector<std::string> args{"--scale-worker", url};
    if (options.heartbeat.count() > 0) {
      args.push_back("--scale-heartbeat-ms");
      args.push_back(std::to_string(options.heartbeat.count()));
    }
    args.insert(args.end(), options.extra.begin(), options.extra.end());
    const std::string& stderr_file = options.stderr_file;
    m_pid = spawn(options.executable, args, [&] {
      if (stderr_file.empty()) return;
      const int fd = ::open(stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) ::dup2(fd, 2);
    });
  }
  ~WorkerProcess() { stop(); }
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  pid_t pid() const { return m_pid; }
  /// monotonic_us() just before the worker was forked.
  std::int64_t started_us() const { return m_started_us; }

  /// Sends `signal`; SIGKILL also reaps the process.
  void kill(int signal) {
    if (m_pid <= 0) return;
    ::kill(m_pid, signal);
    if (signal == SIGKILL) {
      ::waitpid(m_pid, nullptr, 0);
      m_pid = -1;
    }
  }

  /// Ends the process and reaps it, as WorkerOptions::stop_grace says.
  void stop() {
    if (m_pid <= 0) return;
    if (m_stop_grace.count() > 0) {
      ::kill(m_pid, SIGTERM);
      if (wait_exit(m_stop_grace) >= 0) return;
    }
    kill(SIGKILL);
  }

  /// The exit status (128 + the signal for a killed one) once the process ends within `limit`,
  /// or -1.
  int wait_exit(std::chrono::milliseconds limit) {
    if (m_pid <= 0) return -1;
    const auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      int status = 0;
      if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
        m_pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() >= until) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

 private:
  pid_t m_pid = -1;
  std::chrono::milliseconds m_stop_grace;
  std::int64_t m_started_us;
};

}  // namespace support
