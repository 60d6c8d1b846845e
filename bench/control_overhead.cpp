// What stop and progress cost, measured in the same run against the same map without them:
//   - a process-pool map of 1,000,000 trivial items, plain, against the same map whose function
//     takes Scope&, calls scope.progress() 10 times an item and runs with on_progress and a stop
//     token set (target: at least 0.90 of the plain map's items/s);
//   - the same on a thread pool (reported, no target: the thread tiers never serialize, so a
//     progress call is a larger share of a trivial item there).
// Two workers each. Best of five runs, alternating.
//
//   make bench        (or: build/bench/control_overhead)

#include <scale/iterator.hpp>
#include <scale/managers/process_pool.hpp>
#include <scale/managers/thread_pool.hpp>
#include <scale/runtime.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <stop_token>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto trivial = [](int x) { return x * 3 + 1; };
constexpr auto trivial_reporting = [](int x, scale::Scope& scope) {
  for (int step = 1; step <= 10; ++step) scope.progress(step * 0.1);
  return x * 3 + 1;
};
/// Keeps `value` computed, in a register as a call would get it, and does nothing with it.
inline void keep_computed(double value) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("" : : "x"(value));
#elif defined(__aarch64__)
  asm volatile("" : : "w"(value));
#else
  asm volatile("" : : "g"(value) : "memory");
#endif
}

/// The same item with the ten fractions computed and dropped, not reported: what the item's own
/// arithmetic costs, the floor any implementation of scope.progress is measured against.
constexpr auto trivial_computing = [](int x) {
  for (int step = 1; step <= 10; ++step) keep_computed(step * 0.1);
  return x * 3 + 1;
};

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct Rates {
  double plain = 0;
  double computing = 0;
  double reporting = 0;
};

Rates measure(scale::ScalabilityManager& manager, const std::vector<int>& items) {
  scale::Iterator<int> numbers(items, manager);
  std::stop_source stop;
  std::size_t reports = 0;
  scale::RunOptions watched;
  watched.stop = stop.get_token();
  watched.on_progress = [&reports](const scale::Progress&) { ++reports; };
  numbers.map(trivial).get();  // warm: workers up
  numbers.map(trivial_reporting, watched).get();
  Rates best;
  for (int round = 0; round < 5; ++round) {
    auto start = Clock::now();
    auto plain = numbers.map(trivial).get();
    best.plain = std::max(best.plain, static_cast<double>(plain.size()) / seconds_since(start));
    start = Clock::now();
    auto reporting = numbers.map(trivial_reporting, watched).get();
    best.reporting = std::max(best.reporting, static_cast<double>(reporting.size()) / seconds_since(start));
    start = Clock::now();
    auto computing = numbers.map(trivial_computing).get();
    best.computing = std::max(best.computing, static_cast<double>(computing.size()) / seconds_since(start));
    if (plain != reporting || plain != computing) std::fprintf(stderr, "control_overhead: the maps disagree\n");
  }
  if (reports == 0) std::fprintf(stderr, "control_overhead: on_progress was never called\n");
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // in a worker process: serves tasks, then exits
  std::vector<int> million(1'000'000);
  std::iota(million.begin(), million.end(), 0);

  scale::ProcessPoolManager processes({.max_workers = 2, .min_workers = 2});
  const Rates remote = measure(processes, million);
  scale::ThreadPoolManager threads(2);
  const Rates local = measure(threads, million);

  std::printf("1,000,000 trivial items, 2 workers   with progress x10        plain map   ratio  target\n");
  std::printf("process pool                      %12.0f it/s  %12.0f it/s  %5.2fx  >= 0.90x\n", remote.reporting,
              remote.plain, remote.reporting / remote.plain);
  std::printf("thread pool                       %12.0f it/s  %12.0f it/s  %5.2fx  (reported)\n", local.reporting,
              local.plain, local.reporting / local.plain);
  std::printf("the ten fractions computed, not reported (the item's own arithmetic, no scale call):\n");
  std::printf("process pool                      %12.0f it/s  %12.0f it/s  %5.2fx\n", remote.computing, remote.plain,
              remote.computing / remote.plain);
  std::printf("thread pool                       %12.0f it/s  %12.0f it/s  %5.2fx\n", local.computing, local.plain,
              local.computing / local.plain);
  return 0;
}
