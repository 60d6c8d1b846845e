// ProcessPoolManager's elastic side, each figure beside its reference from the same run:
//   (a) uneven items: 400 items, item i sleeps i % 10 ms (1.8 s of work), on
//       ProcessPoolManager({.max_workers = 2}) with automatic chunk sizes (from measured time):
//       makespan against total work / workers (0.9 s). Target <= 1.2x.
//   (b) a bursty trace: 4 bursts of 40 items of 20 ms each (0.8 s of work, 0.1 s on 8 workers),
//       a burst starting 1 s after the previous one finished, on a pool that adapts
//       (adapt({.min = 0, .max = 8, .scale_down_after = 100ms})) against a fixed pool of 8
//       (resize(8), its workers up before the trace starts): worker-seconds (workers_alive
//       sampled every 2 ms and integrated from the first burst's start to the last one's end)
//       and total time. Target: >= 40% fewer worker-seconds for <= 10% more time.
// The items sleep rather than compute, so the figures do not depend on the cores free.
//
//   make bench        (or: build/bench/process_pool_elastic)

#include <scale/iterator.hpp>
#include <scale/managers/process_pool.hpp>
#include <scale/runtime.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <thread>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto uneven = [](int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(x % 10));
  return x;
};

constexpr auto slow_20ms = [](int x) {
  std::this_thread::sleep_for(20ms);
  return x;
};

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::vector<int> iota(int n) {
  std::vector<int> items(static_cast<std::size_t>(n));
  std::iota(items.begin(), items.end(), 0);
  return items;
}

constexpr int bursts = 4;
constexpr int burst_items = 40;
constexpr auto gap = 1s;
constexpr auto scale_down_after = 100ms;

struct TraceFigures {
  double seconds = 0;
  double worker_seconds = 0;
  std::size_t spawned = 0;
};

/// Runs the bursty trace on `manager`, integrating its workers_alive over the trace.
TraceFigures run_trace(scale::ProcessPoolManager& manager) {
  scale::Iterator<int> items(iota(burst_items), manager);
  std::atomic<bool> done{false};
  double worker_seconds = 0;
  const std::size_t spawned_before = manager.stats().workers_spawned;
  const auto start = Clock::now();
  std::thread sampler([&] {
    auto last = Clock::now();
    std::size_t alive = manager.stats().workers_alive;
    while (!done.load()) {
      std::this_thread::sleep_for(2ms);
      const auto now = Clock::now();
      worker_seconds += static_cast<double>(alive) * std::chrono::duration<double>(now - last).count();
      last = now;
      alive = manager.stats().workers_alive;
    }
  });
  for (int burst = 0; burst < bursts; ++burst) {
    if (burst > 0) std::this_thread::sleep_for(gap);
    items.map(slow_20ms).get();
  }
  const double seconds = seconds_since(start);
  done = true;
  sampler.join();
  return {seconds, worker_seconds, manager.stats().workers_spawned - spawned_before};
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // in a worker process: serves tasks, then exits

  // (a) uneven items on two workers.
  double makespan = 0;
  std::size_t chunks = 0;
  {
    scale::ProcessPoolManager manager({.max_workers = 2});
    scale::Iterator<int> items(iota(400), manager);
    items.map(uneven, {.chunk_size = 1}).get();  // warm: both workers up (they stay for idle_timeout)
    makespan = 1e9;
    for (int round = 0; round < 3; ++round) {
      const std::size_t before = manager.stats().tasks_done;
      const auto start = Clock::now();
      items.map(uneven).get();
      const double took = seconds_since(start);
      if (took < makespan) {
        makespan = took;
        chunks = manager.stats().tasks_done - before;
      }
    }
  }
  int work_ms = 0;
  for (int i = 0; i < 400; ++i) work_ms += i % 10;
  const double ideal = work_ms / 1000.0 / 2;

  // (b) the bursty trace, adapting and fixed.
  TraceFigures adaptive, fixed;
  {
    scale::ProcessPoolManager manager({.max_workers = 8});
    manager.adapt({.min = 0, .max = 8, .scale_down_after = scale_down_after});
    adaptive = run_trace(manager);
  }
  {
    scale::ProcessPoolManager manager({.max_workers = 8});
    manager.resize(8);
    while (manager.stats().workers_alive < 8) std::this_thread::sleep_for(1ms);
    scale::Iterator<int> warm(iota(16), manager);
    warm.map(slow_20ms, {.chunk_size = 1}).get();  // every worker has said hello
    fixed = run_trace(manager);
  }

  std::printf("process pool, elastic                          scale          reference      ratio  target\n");
  std::printf("(a) 400 uneven items (i %% 10 ms), 2 workers      %8.3f s     %8.3f s       %5.2fx  <= 1.2x "
              "(makespan vs work / workers; best of 3, %zu chunks)\n",
              makespan, ideal, makespan / ideal, chunks);
  std::printf("(b) bursty trace, %d x %d items of 20 ms, %lld s gaps; adapt {0..8, down after %lld ms} vs fixed 8:\n",
              bursts, burst_items, static_cast<long long>(std::chrono::seconds(gap).count()),
              static_cast<long long>(scale_down_after.count()));
  std::printf("    worker-seconds                             %8.2f       %8.2f       %5.2fx  <= 0.6x\n",
              adaptive.worker_seconds, fixed.worker_seconds, adaptive.worker_seconds / fixed.worker_seconds);
  std::printf("    total time                                 %8.3f s     %8.3f s       %5.2fx  <= 1.1x\n",
              adaptive.seconds, fixed.seconds, adaptive.seconds / fixed.seconds);
  std::printf("    workers spawned during the trace           %8zu       %8zu\n", adaptive.spawned, fixed.spawned);
  return 0;
}
