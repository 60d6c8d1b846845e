// The canonical program on many servers: the same map, run by workers that join through Redis.
// Only the manager and the memory change (ClusterManager, SharedMemory("redis://...")); the
// workers are this very executable, started with --scale-worker, on this machine or any other
// that reaches the Redis server. Run, in three terminals (see README, "Scaling to many servers"):
//
//   redis-server --port 6379 --save ''                                   # 1: the Redis server
//   build/examples/03-cluster --scale-worker redis://127.0.0.1:6379      # 2: a worker (start two)
//   build/examples/03-cluster redis://127.0.0.1:6379 200                 # 3: the application
//
// Arguments: the Redis URL (else $SCALE_REDIS_URL, else redis://127.0.0.1:6379) and a pause per
// item in milliseconds (default 0), long enough to kill or add a worker while the map runs.
#include <scale/scale.hpp>

#include <cassert>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

// Runs on whichever worker takes its chunk. It captures nothing; shared state comes through
// `scope`, here a redis:// memory that every worker reaches directly.
auto times_multiplier = [](int number, scale::Scope& scope) -> scale::Future<int> {
  int multiplier = co_await scope.get<int>("multiplier");
  int pause_ms = co_await scope.get<int>("pause_ms");
  std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));  // stands in for real work
  co_return number* multiplier;
};

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // with --scale-worker URL: serves tasks until SIGTERM, then exits
  const char* env_url = std::getenv("SCALE_REDIS_URL");
  const std::string url = argc > 1 ? argv[1] : env_url ? env_url : "redis://127.0.0.1:6379";
  char* end = nullptr;
  const long pause_ms = argc > 2 ? std::strtol(argv[2], &end, 10) : 0;
  if (argc > 3 || (argc > 2 && (*end != '\0' || pause_ms < 0 || pause_ms > 60'000))) {
    std::fprintf(stderr, "usage: 03-cluster [redis://host:port] [pause per item, 0 to 60000 ms]\n"
                         "       03-cluster --scale-worker redis://host:port   (a worker)\n");
    return 2;
  }

  try {
    return runtime.run([&]() -> scale::Future<int> {
      scale::SharedMemory memory(url);  // every worker reads "multiplier" from here
      scale::SharedEventEmitter events(url);
      scale::ClusterManager manager(url);  // chunks go to whichever workers joined through `url`
      std::vector<int> items(40);
      std::iota(items.begin(), items.end(), 1);
      scale::Iterator<int> numbers(items, manager);
      numbers.use_scope(memory);

      co_await memory.set("multiplier", 10);
      co_await memory.set("pause_ms", static_cast<int>(pause_ms));

      // One item per chunk, so that you can watch work move between workers as they come and go;
      // real work leaves chunk_size out (automatic chunks amortize the Redis round trips).
      scale::RunOptions options;
      options.chunk_size = 1;
      options.progress = [&manager](std::size_t done, std::size_t total) {
        scale::ManagerStats stats = manager.stats();
        std::printf("%2zu/%zu done   workers alive: %zu   chunks rerun: %zu\n", done, total, stats.workers_alive,
                    stats.tasks_retried);
        std::fflush(stdout);
      };
      std::printf("map of %zu items on %s (workers join with --scale-worker %s)\n", items.size(), url.c_str(),
                  url.c_str());
      std::fflush(stdout);
      std::vector<int> result = co_await numbers.map(times_multiplier, options);

      for (std::size_t i = 0; i < items.size(); ++i) assert(result[i] == items[i] * 10);
      std::printf("every result arrived, in order: %d %d %d ... %d\n", result[0], result[1], result[2], result.back());
      for (const scale::ClusterWorker& worker : manager.workers())
        std::printf("worker pid %d on %s%s\n", worker.pid, worker.host.c_str(),
                    worker.compatible ? "" : ": another build, given nothing");
      co_await events.emit("success!");
      co_return 0;
    });
  } catch (const scale::Error& error) {  // a bad URL, Redis unreachable, no worker in time
    std::fprintf(stderr, "03-cluster: %s\n", error.what());
    return 1;
  }
}
