#pragma once
// node on a script of bench/js/, whose stdout the benchmark reads line by line (each line one
// message: a word such as "ready", or one JSON object of figures), stopped by its pid when it goes.
//
// Why a pipe of lines and not a file: the watch benchmark writes its changes only once the Node
// watch says it is in place, and reads the figures the moment Node has them.

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../../tests/support/spawn.hpp"
#include "stop_child.hpp"

#ifndef SCALE_BENCH_JS_DIR
#error "bench/CMakeLists.txt defines SCALE_BENCH_JS_DIR (the bench/js folder)"
#endif

namespace bench {

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

}  // namespace bench
