#pragma once
// What a ClusterManager benchmark starts: a redis-server of its own on a free loopback port
// (killed by its pid when it goes), and workers of this very binary joined through it.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "../../tests/support/redis_server.hpp"
#include "../../tests/support/worker_process.hpp"

namespace bench {

/// Whether `program` is on PATH.
inline bool have(const char* program) {
  return std::system(("command -v " + std::string(program) + " >/dev/null 2>&1").c_str()) == 0;
}

/// A redis-server of the benchmark's own, or nothing (and a line saying `name` is skipped) when
/// there is no redis-server to start.
inline std::unique_ptr<support::RedisServer> redis_or_skip(const char* name) {
  if (!have("redis-server")) {
    std::printf("%s: skipped, redis-server not found (make deps installs it)\n", name);
    return nullptr;
  }
  return std::make_unique<support::RedisServer>();
}

/// A worker of this very executable, joined through `url` with the default heartbeat; stopped
/// with SIGTERM by its pid (SIGKILL after 5 s), and killed by the kernel if the benchmark dies
/// first (it would otherwise serve on).
class WorkerProcess : public support::WorkerProcess {
 public:
  explicit WorkerProcess(const std::string& url) : support::WorkerProcess(url, options()) {}

 private:
  static support::WorkerOptions options() {
    support::WorkerOptions options;
    options.heartbeat = std::chrono::milliseconds(0);
    options.stop_grace = std::chrono::seconds(5);
    return options;
  }
};

}  // namespace bench
