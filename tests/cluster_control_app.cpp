// A program for the cluster's Ctrl-C test: an application that runs one long map on a
// ClusterManager and says on stdout what the test synchronises on. The Runtime handles SIGINT as
// it does by default: the first one stops the map (it fails with scale::Cancelled, which this
// program reports before it exits with its own code). Started with --scale-worker URL it is a
// worker of that cluster instead (the manager gives its chunks only to workers of its own build).
//
//   cluster_control_app URL [GRACE_MS]
//
// The map: 64 items, one per chunk, each waiting for scope.stop_requested(). GRACE_MS is
// RunOptions::grace (default 2000).
//
// Output, one line each, flushed: "running" once a worker holds a chunk; at the end "cancelled"
// (exit status 3), "finished" (0) or "error: <what>" (1). Usage errors exit with status 2.

#include <scale/scale.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

constexpr int exit_cancelled = 3;
constexpr int exit_error = 1;
constexpr int exit_usage = 2;

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

/// Waits, in 1 ms steps, for the stop (at most a minute: the test ends long before).
auto waits_for_stop = [](int x, scale::Scope& scope) {
  for (int i = 0; i < 60'000 && !scope.stop_requested(); ++i) std::this_thread::sleep_for(1ms);
  return x;
};

int run_on_cluster(const std::string& url, std::chrono::milliseconds grace) {
  scale::ClusterOptions options;
  options.heartbeat_interval = 100ms;
  options.heartbeat_ttl = 1500ms;
  scale::ClusterManager manager(url, options);
  scale::Iterator<int> numbers(std::vector<int>(64, 1), manager);
  scale::RunOptions run_options;
  run_options.chunk_size = 1;
  run_options.grace = grace;
  auto pending = numbers.map(waits_for_stop, run_options);
  // NOTE: a poll, in the program under test: the test itself waits for the line it prints.
  while (manager.stats().tasks_running < 1 && !pending.ready()) std::this_thread::sleep_for(5ms);
  say("running");
  try {
    pending.get();
    say("finished");
    return 0;
  } catch (const scale::Cancelled&) {
    say("cancelled");
    return exit_cancelled;
  } catch (const std::exception& error) {
    say(std::string("error: ") + error.what());
    return exit_error;
  }
}

}  // namespace

int main(int argc, char** argv) {
  // In a cluster worker this serves chunks and never returns.
  scale::Runtime runtime(argc, argv);
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: cluster_control_app URL [GRACE_MS]\n");
    return exit_usage;
  }
  const auto grace = std::chrono::milliseconds(argc == 3 ? std::atol(argv[2]) : 2000);
  return run_on_cluster(argv[1], grace);
}
