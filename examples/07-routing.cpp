// Routing on the cluster: what workers provide, what a call needs. Three workers join through
// Redis and one of them provides a gpu. A map whose items need {gpu: 1} runs on that worker
// alone, one chunk at a time (it provides one gpu); a map that needs nothing runs on the other
// two meanwhile, not behind the gpu work; and a map that needs two gpus, which no worker has,
// fails at once with scale::Unsatisfiable naming what each worker offers. Run, in five terminals
// (or examples/run-cluster-example.sh, which does all of it on a Redis of its own:
// `examples/run-cluster-example.sh build/examples/07-routing "--scale-provides gpu=1" "" ""`):
//
//   redis-server --port 6379 --save ''                                                    # Redis
//   build/examples/07-routing --scale-worker redis://127.0.0.1:6379 --scale-provides gpu=1 # the gpu worker
//   build/examples/07-routing --scale-worker redis://127.0.0.1:6379                        # two of these
//   build/examples/07-routing redis://127.0.0.1:6379                                       # the application
//
// The maps are map_with_workers: each result comes with the id of the worker that produced it
// (scale::WorkerResult{.value, .worker}), and the application names the worker's offer from
// manager.workers().
#include <scale/scale.hpp>

#include <cassert>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

// Stands in for work that needs the gpu: runs only where RunOptions::resources can be met.
auto render_on_gpu = [](int frame) {
  std::this_thread::sleep_for(100ms);
  return frame;
};

// Needs nothing: any worker may run it.
auto make_thumbnail = [](int image) {
  std::this_thread::sleep_for(20ms);
  return image;
};

/// "worker <id> {<provides>}".
std::string name_of(const std::vector<scale::ClusterWorker>& workers, const std::string& id) {
  for (const auto& worker : workers)
    if (worker.id == id) return "worker " + id + " {" + scale::provides_text(worker.provides) + "}";
  return "worker " + id;
}

void print_where(const char* what, const std::vector<scale::WorkerResult<int>>& results,
                 const std::vector<scale::ClusterWorker>& workers) {
  std::map<std::string, int> items_by_worker;
  for (const auto& result : results) ++items_by_worker[result.worker];
  std::printf("%s:\n", what);
  for (const auto& [worker, items] : items_by_worker)
    std::printf("  %2d item(s) on %s\n", items, name_of(workers, worker).c_str());
}

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // with --scale-worker URL: serves tasks until SIGTERM, then exits
  const char* env_url = std::getenv("SCALE_REDIS_URL");
  const std::string url = argc > 1 ? argv[1] : env_url ? env_url : "redis://127.0.0.1:6379";
  if (argc > 2) {
    std::fprintf(stderr, "usage: 07-routing [redis://host:port]\n"
                         "       07-routing --scale-worker redis://host:port [--scale-provides gpu=1]   (a worker)\n");
    return 2;
  }

  try {
    return runtime.run([&]() -> scale::Future<int> {
      scale::ClusterOptions options;
      options.wait_for_workers = 30s;
      scale::ClusterManager manager(url, options);
      std::printf("waiting for three workers on %s (one with --scale-provides gpu=1)\n", url.c_str());
      std::fflush(stdout);
      while (manager.workers().size() < 3) {
        scale::Future<void> pause = scale::sleep_for(50ms);
        co_await std::move(pause);
      }
      std::string gpu_worker;
      for (const auto& worker : manager.workers())
        if (scale::provided_amount(worker.provides, "gpu")) gpu_worker = worker.id;
      assert(!gpu_worker.empty());

      std::vector<int> frames(8), images(40);
      for (int i = 0; i < 8; ++i) frames[static_cast<std::size_t>(i)] = i;
      for (int i = 0; i < 40; ++i) images[static_cast<std::size_t>(i)] = i;
      scale::Iterator<int> frame_items(frames, manager);
      scale::Iterator<int> image_items(images, manager);

      // The gpu map starts first and keeps the gpu worker busy for about 800 ms; the thumbnails,
      // which need nothing, do not wait behind it.
      scale::RunOptions on_gpu;
      on_gpu.chunk_size = 1;
      on_gpu.resources = {{"gpu", 1}};
      auto rendering = frame_items.map_with_workers(render_on_gpu, on_gpu);
      scale::RunOptions anywhere;
      anywhere.chunk_size = 1;
      auto thumbnailing = image_items.map_with_workers(make_thumbnail, anywhere);
      std::vector<scale::WorkerResult<int>> thumbnails = co_await std::move(thumbnailing);
      const bool rendered_by_then = rendering.ready();
      std::vector<scale::WorkerResult<int>> rendered = co_await std::move(rendering);

      const std::vector<scale::ClusterWorker> workers = manager.workers();
      print_where("frames, each needing {gpu=1}", rendered, workers);
      print_where("thumbnails, needing nothing", thumbnails, workers);
      std::printf("the thumbnails were done %s the frames\n", rendered_by_then ? "after" : "before");
      for (const auto& frame : rendered) assert(frame.worker == gpu_worker);

      // Two gpus: no worker seen provides that many, so the call fails at once instead of waiting.
      scale::RunOptions two_gpus = on_gpu;
      two_gpus.resources = {{"gpu", 2}};
      try {
        scale::Future<std::vector<int>> impossible = frame_items.map(render_on_gpu, two_gpus);
        co_await std::move(impossible);
        assert(false && "no worker provides gpu=2");
      } catch (const scale::Unsatisfiable& error) {
        std::printf("a map needing {gpu=2}: scale::Unsatisfiable: %s\n", error.what());
      }
      co_return 0;
    });
  } catch (const scale::Error& error) {  // a bad URL, Redis unreachable, no worker in time
    std::fprintf(stderr, "07-routing: %s\n", error.what());
    return 1;
  }
}
