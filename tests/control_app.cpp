// A program for the Ctrl-C tests: an application that runs one long map and says on stdout what a
// test synchronises on. The Runtime handles SIGINT as it does by default: the first one stops the
// map (it fails with scale::Cancelled, which this program reports before it exits with its own
// code), a second one kills the workers and ends the program with SIGINT.
//
//   control_app MODE [GRACE_MS]
//
// MODE says where the map runs and what its items do; each mode is one function below:
//   pool           a ProcessPoolManager of 2 workers; items wait for scope.stop_requested()
//   pool-stubborn  the same, but items spin in C++ and never look at the stop (no Scope), so the
//                  pool kills their workers once the grace has passed
// GRACE_MS is RunOptions::grace (default 2000).
//
// Output, one line each, flushed: "worker <pid>" for each worker process, then "running" once
// every worker holds a chunk; at the end "cancelled" (exit status 3), "finished" (0) or
// "error: <what>" (1). Usage errors exit with status 2.

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

int pool(std::chrono::milliseconds grace) {
  return run_on_pool(2, [grace](scale::Iterator<int>& numbers) {
    return numbers.map(waits_for_stop, {.chunk_size = 1, .grace = grace});
  });
}

int pool_stubborn(std::chrono::milliseconds grace) {
  return run_on_pool(2, [grace](scale::Iterator<int>& numbers) {
    return numbers.map(ignores_stop, {.chunk_size = 1, .grace = grace});
  });
}

}  // namespace

int main(int argc, char** argv) {
  // In a worker process this serves tasks and never returns.
  scale::Runtime runtime(argc, argv);
  const std::map<std::string, std::function<int(std::chrono::milliseconds)>> modes{
      {"pool", pool},
      {"pool-stubborn", pool_stubborn},
  };
  auto mode = argc >= 2 ? modes.find(argv[1]) : modes.end();
  if (mode == modes.end() || argc > 3) {
    std::fprintf(stderr, "usage: control_app MODE [GRACE_MS]; MODE is one of:");
    for (const auto& [name, run] : modes) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return exit_usage;
  }
  const auto grace = std::chrono::milliseconds(argc == 3 ? std::atol(argv[2]) : 2000);
  return mode->second(grace);
}
