#pragma once
// This build's scale-store for a benchmark: on a free loopback port, stopped by its pid when it
// goes (and killed by the kernel if the benchmark dies first, as the tests' children are).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../../tests/support/loopback.hpp"
#include "../../tests/support/spawn.hpp"
#include "stop_child.hpp"

#ifndef SCALE_STORE_BINARY
#error "bench/CMakeLists.txt defines SCALE_STORE_BINARY (the scale-store program of this build)"
#endif

namespace bench {

/// Raises the soft limit on open files to the hard one (1,000 streams need 1,000 descriptors in
/// the store and in node, which inherit it); returns the soft limit in force.
inline rlim_t raise_open_files_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur;
}

/// This build's scale-store on a free loopback port, with `flags` after --port.
class StoreProcess {
 public:
  explicit StoreProcess(const std::vector<std::string>& flags = {}) : m_port(support::free_loopback_port()) {
    std::vector<std::string> args{"--port", std::to_string(m_port)};
    args.insert(args.end(), flags.begin(), flags.end());
    m_pid = support::spawn(SCALE_STORE_BINARY, args, [] {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!support::loopback_accepts(m_port)) {
      if (::waitpid(m_pid, nullptr, WNOHANG) == m_pid) {
        m_pid = -1;
        throw std::runtime_error(std::string("scale-store (") + SCALE_STORE_BINARY + ") exited at start");
      }
      if (std::chrono::steady_clock::now() > deadline) {
        stop();
        throw std::runtime_error("scale-store did not listen within 10 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~StoreProcess() { stop(); }
  StoreProcess(const StoreProcess&) = delete;
  StoreProcess& operator=(const StoreProcess&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(m_port); }
  pid_t pid() const { return m_pid; }
  void stop() {
    stop_child(m_pid, std::chrono::seconds(5));
    m_pid = -1;
  }

 private:
  int m_port;
  pid_t m_pid = -1;
};

}  // namespace bench
