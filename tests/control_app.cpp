// A program for the Ctrl-C tests: an application that runs one long map and says on stdout what a
// test synchronises on. The Runtime handles SIGINT as it does by default: the first one stops the
// map (it fails with scale::Cancelled, which this program reports before it exits with its own
// code), a second one kills the workers and ends the program with SIGINT.
//
//   control_app MODE [GRACE_MS [URL]]
//
// MODE says where the map runs and what its items do; each mode is one function below:
//   pool                a ProcessPoolManager of 2 workers; items wait for scope.stop_requested()
//   pool-ignoring-stop  the same, but items spin in C++ and never look at the stop (no Scope), so
//                       the pool kills their workers once the grace has passed
//   cluster             a ClusterManager on the Redis at URL; items wait for the stop. Its workers
//                       are this program too, started with --scale-worker URL (the manager gives
//                       chunks only to workers of its own build)
// GRACE_MS is RunOptions::grace (default 2000).
//
// Output, one line each, flushed: "worker <pid>" for each worker process (pool modes), then
// "running" once every worker holds a chunk (cluster: once one does); at the end "cancelled" (exit
// status 3), "finished" (0) or "error: <what>" (1). Usage errors exit with status 2.

#include <scale/scale.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
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

/// Spins for a minute without looking at anything.
auto ignores_stop = [](int x) {
  const auto until = std::chrono::steady_clock::now() + 60s;
  volatile int spins = 0;
  while (std::chrono::steady_clock::now() < until) spins = spins + 1;
  return x;
};

/// Says "running", then how the map of `pending` ended; returns the exit status.
int report(scale::Future<std::vector<int>>& pending) {
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

/// Runs `map` (which starts the map and returns its Future) on a pool of `workers` processes:
/// prints the workers, says "running" once each holds a chunk, and reports how the map ended.
template <class StartMap>
int run_on_pool(std::size_t workers, StartMap start_map) {
  scale::ProcessPoolManager manager({.max_workers = workers, .min_workers = workers});
  scale::Iterator<int> numbers(std::vector<int>(64, 1), manager);
  auto pending = start_map(numbers);
  // NOTE: a poll, in the program under test: the test itself waits for the line it prints.
  while (manager.stats().tasks_running < workers && !pending.ready()) std::this_thread::sleep_for(5ms);
  for (pid_t pid : manager.worker_pids()) say("worker " + std::to_string(pid));
  return report(pending);
}

int pool(std::chrono::milliseconds grace) {
  return run_on_pool(2, [grace](scale::Iterator<int>& numbers) {
    return numbers.map(waits_for_stop, {.chunk_size = 1, .grace = grace});
  });
}

int pool_ignoring_stop(std::chrono::milliseconds grace) {
  return run_on_pool(2, [grace](scale::Iterator<int>& numbers) {
    return numbers.map(ignores_stop, {.chunk_size = 1, .grace = grace});
  });
}

int cluster(std::chrono::milliseconds grace, const std::string& url) {
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
  return report(pending);
}

}  // namespace

int main(int argc, char** argv) {
  // In a worker process this serves tasks and never returns.
  scale::Runtime runtime(argc, argv);
  const std::string url = argc == 4 ? argv[3] : "";
  const std::map<std::string, std::function<int(std::chrono::milliseconds)>> modes{
      {"pool", pool},
      {"pool-ignoring-stop", pool_ignoring_stop},
      {"cluster", [&url](std::chrono::milliseconds grace) { return cluster(grace, url); }},
  };
  auto mode = argc >= 2 ? modes.find(argv[1]) : modes.end();
  if (mode == modes.end() || argc > 4 || (argv[1] == std::string("cluster")) != (argc == 4)) {
    std::fprintf(stderr, "usage: control_app MODE [GRACE_MS] (cluster: control_app cluster GRACE_MS URL); MODE is one of:");
    for (const auto& [name, run] : modes) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return exit_usage;
  }
  const auto grace = std::chrono::milliseconds(argc == 3 ? std::atol(argv[2]) : 2000);
  return mode->second(grace);
}
