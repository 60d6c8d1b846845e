#pragma once
// tests/control_app.cpp as the Ctrl-C tests start it: a child of the test with SIGINT at its
// default (a background job of a non-interactive shell, ctest's included, starts with SIGINT
// ignored, which an exec keeps), in a process group of its own (as a program started from a
// shell is), its stdout and stderr on one pipe the test reads line by line.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <optional>
#include <string>
#include <vector>

#include <sys/wait.h>

#include "eventually.hpp"
#include "spawn.hpp"

namespace support {

struct ControlApp {
  pid_t pid = -1;
  int output = -1;  ///< the program's stdout and stderr
  std::string buffered;

  ControlApp() = default;
  ControlApp(const ControlApp&) = delete;
  ControlApp& operator=(const ControlApp&) = delete;
  /// A program still running when the test ends (a failed check) is killed and reaped.
  ~ControlApp() {
    if (pid > 0 && !exited) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (output >= 0) ::close(output);
  }

  /// Its raw wait status once it ends within `limit` (it is reaped), or nothing.
  std::optional<int> wait_exit(std::chrono::milliseconds limit) {
    std::optional<int> status;
    eventually(
        [&] {
          int raw = 0;
          if (::waitpid(pid, &raw, WNOHANG) == pid) status = raw;
          return status.has_value();
        },
        limit, std::chrono::milliseconds(5));
    exited = exited || status.has_value();
    return status;
  }
  bool exited = false;

  /// The next line it prints (without the newline), or nothing once `limit` has passed or the
  /// program closed its output.
  std::optional<std::string> line(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (auto end = buffered.find('\n'); end != std::string::npos) {
        std::string text = buffered.substr(0, end);
        buffered.erase(0, end + 1);
        return text;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd readable{output, POLLIN, 0};
      if (::poll(&readable, 1, static_cast<int>(left.count())) <= 0) continue;
      char bytes[4096];
      const ssize_t n = ::read(output, bytes, sizeof bytes);
      if (n <= 0) return std::nullopt;
      buffered.append(bytes, static_cast<std::size_t>(n));
    }
  }

  /// Reads lines until one contains `text` (returned), or nothing once `limit` has passed.
  /// `seen` is called with each line read before it.
  template <class Seen>
  std::optional<std::string> line_with(const std::string& text, std::chrono::milliseconds limit, Seen seen) {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      auto next = line(std::max(left, std::chrono::milliseconds(0)));
      if (!next) return std::nullopt;
      if (next->find(text) != std::string::npos) return next;
      seen(*next);
    }
  }
};

/// Starts `program` (tests/control_app) with `args` (its mode first).
inline void start_control_app(ControlApp& app, const std::string& program, const std::vector<std::string>& args) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  app.pid = spawn(program, args, [&] {
    ::setpgid(0, 0);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(pipe_fds[1], 1);
    ::dup2(pipe_fds[1], 2);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
  });
  ::close(pipe_fds[1]);
  app.output = pipe_fds[0];
}

}  // namespace support
