// The cluster asks for workers: a map of slow items on a ClusterManager that starts with no worker
// at all. The manager's backlog sets desired_workers(), which it prints as it changes (on_demand)
// and writes to Redis ({scale}:desired:<fingerprint>); a shell loop reading that key starts workers
// of this executable, and stops them again once the count falls back to 0 after the map.
// examples/run-autoscale-example.sh runs all of it against a redis-server of its own:
//
//   examples/run-autoscale-example.sh build/examples/05-autoscale
//
// or by hand, in three terminals:
//
//   redis-server --port 6379 --save ''                                                   # 1
//   examples/autoscale-workers.sh build/examples/05-autoscale redis://127.0.0.1:6379 4   # 2: the loop
//   build/examples/05-autoscale redis://127.0.0.1:6379                                   # 3
#include <scale/scale.hpp>

#include <cassert>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

// Stands in for real work: 100 ms an item, on whichever worker takes its chunk.
auto slow_square = [](int x) {
  std::this_thread::sleep_for(100ms);
  return x * x;
};

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // with --scale-worker URL: serves tasks until SIGTERM, then exits
  if (argc != 2) {
    std::fprintf(stderr, "usage: 05-autoscale redis://host:port\n"
                         "       05-autoscale --scale-worker redis://host:port   (a worker)\n");
    return 2;
  }
  const std::string url = argv[1];

  try {
    return runtime.run([&]() -> scale::Future<int> {
      scale::ClusterOptions options;
      options.wait_for_workers = 30s;  // the first worker is still to be started
      // At most 4 workers; 2 s with a lower count before asking for fewer.
      options.scaling = {.min = 0, .max = 4, .scale_down_after = 2s};
      options.on_demand = [](std::size_t workers) {  // on the loop, each time the count changes
        std::printf("desired workers: %zu\n", workers);
        std::fflush(stdout);
      };
      scale::ClusterManager manager(url, options);

      std::size_t seen = 0;  // the live workers last printed
      auto print_workers = [&] {
        const std::size_t alive = manager.stats().workers_alive;
        if (alive == seen) return;
        seen = alive;
        std::printf("workers seen: %zu\n", alive);
        std::fflush(stdout);
      };

      std::vector<int> items(60);
      std::iota(items.begin(), items.end(), 0);
      scale::Iterator<int> numbers(items, manager);
      scale::RunOptions run;
      run.progress = [&](std::size_t, std::size_t) { print_workers(); };
      std::printf("map of %zu items of 100 ms on %s, no worker yet\n", items.size(), url.c_str());
      std::fflush(stdout);
      const auto started = std::chrono::steady_clock::now();
      std::vector<int> squares = co_await numbers.map(slow_square, run);
      const auto took = std::chrono::steady_clock::now() - started;
      for (std::size_t i = 0; i < items.size(); ++i) assert(squares[i] == items[i] * items[i]);
      std::printf("every result arrived, in order, in %.1f s\n", std::chrono::duration<double>(took).count());
      std::fflush(stdout);

      // Nothing left: after scale_down_after the count falls to 0 and the loop stops the workers.
      const auto deadline = std::chrono::steady_clock::now() + 20s;
      while ((manager.desired_workers() != 0 || manager.stats().workers_alive != 0) &&
             std::chrono::steady_clock::now() < deadline) {
        scale::Future<void> tick = scale::sleep_for(100ms);
        co_await std::move(tick);
        print_workers();
      }
      if (manager.stats().workers_alive != 0) {
        std::printf("the workers did not leave within 20 s (is the loop running?)\n");
        co_return 1;
      }
      std::printf("no worker left, none wanted\n");
      co_return 0;
    });
  } catch (const scale::Error& error) {  // a bad URL, Redis unreachable, no worker in time
    std::fprintf(stderr, "05-autoscale: %s\n", error.what());
    return 1;
  }
}
