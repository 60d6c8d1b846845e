#pragma once
// What a scale.js benchmark starts: this build's scale-store on a free loopback port (stopped by
// its pid when it goes, and killed by the kernel if the benchmark dies first), and node on a
// script of bench/js/ whose stdout the benchmark reads line by line (each line one message: a
// word such as "ready", or one JSON object of figures), so the benchmark can act between them.
//
// Why a pipe of lines and not a file: the watch benchmark writes its changes only once the Node
// watch says it is in place, and reads the figures the moment Node has them.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../../tests/support/spawn.hpp"

#ifndef SCALE_STORE_BINARY
#error "bench/CMakeLists.txt defines SCALE_STORE_BINARY (the scale-store program of this build)"
#endif
#ifndef SCALE_BENCH_JS_DIR
#error "bench/CMakeLists.txt defines SCALE_BENCH_JS_DIR (the bench/js folder)"
#endif

namespace bench {

/// A loopback port nobody listens on now (bound to port 0, read back, closed).
inline int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

/// Whether something accepts connections on 127.0.0.1:`port`.
inline bool loopback_port_accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool accepted = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return accepted;
}

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
  explicit StoreProcess(const std::vector<std::string>& flags = {}) : m_port(free_loopback_port()) {
    std::vector<std::string> args{"--port", std::to_string(m_port)};
    args.insert(args.end(), flags.begin(), flags.end());
    m_pid = support::spawn(SCALE_STORE_BINARY, args, [] {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!loopback_port_accepts(m_port)) {
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

/// `node bench/js/<script> args...`, its stdout read by line(); stopped by its pid when it goes.
class NodeScript {
 public:
  NodeScript(const std::string& script, const std::vector<std::string>& args) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    std::vector<std::string> argv{std::string(SCALE_BENCH_JS_DIR) + "/" + script};
    argv.insert(argv.end(), args.begin(), args.end());
    // node's stderr stays the benchmark's, so what it says on failure is seen.
    m_pid = support::spawn(node_path(), argv, [&] {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
    });
    ::close(fds[1]);
    m_out = ::fdopen(fds[0], "r");
  }
  ~NodeScript() {
    if (m_out) std::fclose(m_out);
    stop_child(m_pid, std::chrono::seconds(2));
  }
  NodeScript(const NodeScript&) = delete;
  NodeScript& operator=(const NodeScript&) = delete;

  /// The next line node printed (without its newline), or nothing once node closed its stdout.
  std::optional<std::string> line() {
    std::string text;
    int c;
    while ((c = std::fgetc(m_out)) != EOF) {
      if (c == '\n') return text;
      text.push_back(static_cast<char>(c));
    }
    if (text.empty()) return std::nullopt;
    return text;
  }

  /// Waits for node to exit; its exit status (0 when it succeeded).
  int wait() {
    int status = 0;
    if (::waitpid(m_pid, &status, 0) != m_pid) return -1;
    m_pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  /// The node program on PATH, or empty.
  static std::string node_path() {
    FILE* pipe = ::popen("command -v node 2>/dev/null", "r");
    if (!pipe) return {};
    char path[4096] = {};
    std::string found = std::fgets(path, sizeof path, pipe) ? path : "";
    ::pclose(pipe);
    while (!found.empty() && (found.back() == '\n' || found.back() == '\r')) found.pop_back();
    return found;
  }

  /// `node --version`, e.g. "v20.20.2".
  static std::string version() {
    FILE* pipe = ::popen("node --version 2>/dev/null", "r");
    if (!pipe) return "?";
    char text[64] = {};
    std::string found = std::fgets(text, sizeof text, pipe) ? text : "?";
    ::pclose(pipe);
    while (!found.empty() && (found.back() == '\n' || found.back() == '\r')) found.pop_back();
    return found;
  }

 private:
  pid_t m_pid = -1;
  FILE* m_out = nullptr;
};

/// The benchmark's seconds per load run: SCALE_BENCH_SECONDS (1 to 60), else `fallback`.
inline int seconds_per_run(int fallback) {
  const char* text = std::getenv("SCALE_BENCH_SECONDS");
  if (!text || !*text) return fallback;
  const int seconds = std::atoi(text);
  return seconds < 1 ? 1 : seconds > 60 ? 60 : seconds;
}

}  // namespace bench
