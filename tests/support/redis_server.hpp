#pragma once
// A redis-server of the test's own, on a free loopback port, without persistence. The shared one
// starts once per test executable and is stopped (by its pid) when the executable exits.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "loopback.hpp"

namespace support {

class RedisServer {
 public:
  explicit RedisServer(int port = 0, std::vector<std::string> extra = {})
      : m_port(port ? port : free_port()), m_extra(std::move(extra)) {
    start();
  }
  ~RedisServer() { stop(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return m_port; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(m_port); }

  void start() {
    if (m_pid > 0) return;
    std::string port = std::to_string(m_port);
    m_pid = ::fork();
    if (m_pid < 0) throw std::runtime_error("fork failed");
    if (m_pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      std::vector<const char*> argv{"redis-server", "--port", port.c_str(), "--save",     "",       "--appendonly",
                                    "no",           "--bind", "127.0.0.1",  "--loglevel", "warning"};
      for (const auto& arg : m_extra) argv.push_back(arg.c_str());
      argv.push_back(nullptr);
      ::execvp("redis-server", const_cast<char* const*>(argv.data()));
      ::_exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!loopback_accepts(m_port)) {
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("redis-server did not start");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  /// Ends the server this object started (by its pid) and waits for it.
  void stop() {
    if (m_pid <= 0) return;
    ::kill(m_pid, SIGKILL);
    ::waitpid(m_pid, nullptr, 0);
    m_pid = -1;
  }

  /// The server every test of this executable shares.
  static RedisServer& shared() {
    static RedisServer server;
    return server;
  }

  /// A namespace no other store of this executable uses.
  static std::string fresh_namespace() {
    static std::atomic<int> next{0};
    return "t" + std::to_string(::getpid()) + "-" + std::to_string(next.fetch_add(1));
  }

 public:
  /// A loopback port nothing listened on a moment ago.
  static int free_port() { return free_loopback_port(); }

 private:
  int m_port;
  std::vector<std::string> m_extra;
  pid_t m_pid = -1;
};

}  // namespace support
