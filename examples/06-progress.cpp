// A progress bar for a long map: 8 items of 2 s each on a process pool, each item reporting its
// progress in 10 steps through scope.progress(). RunOptions::on_progress redraws one line on
// stderr (at most every 100 ms, and once at the end), so the bar moves within items rather than
// jumping as each one finishes. Press Ctrl-C while it runs: the map stops (the items see
// scope.stop_requested() and return), the call fails with scale::Cancelled, and the program says
// so and exits with status 130; a second Ctrl-C ends it at once.
//
// With SCALE_STORE_URL set to a scale-store (http://host:port), the pool also reports to it
// (report_to): open http://host:port/ui/ to watch the map's progress, its workers and stats live.
//
//   build/examples/06-progress
//   build/scale-store --port 12345 &  SCALE_STORE_URL=http://127.0.0.1:12345 build/examples/06-progress
#include <scale/scale.hpp>

#include <cassert>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

// Stands in for a long computation: ten steps of 200 ms, each reported, each a chance to stop.
auto long_item = [](int x, scale::Scope& scope) {
  for (int step = 1; step <= 10; ++step) {
    if (scope.stop_requested()) return -1;
    std::this_thread::sleep_for(200ms);
    scope.progress(step / 10.0);
  }
  return x * x;
};

void draw(const scale::Progress& progress) {
  constexpr int width = 30;
  const int filled = static_cast<int>(progress.fraction * width + 0.5);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(width - filled), '.');
  std::string eta = progress.eta ? std::to_string(progress.eta->count() / 100 / 10.0).substr(0, 4) + " s" : "?";
  std::fprintf(stderr, "\r[%s] %3d%%  %zu/%zu items  %zu workers  eta %-8s", bar.c_str(),
               static_cast<int>(progress.fraction * 100), progress.items_done, progress.items_total,
               progress.workers, eta.c_str());
  if (progress.fraction == 1.0) std::fputc('\n', stderr);
}

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // in a worker process: serves tasks and never returns
  // Optional: with no SCALE_STORE_URL the program runs as before, reporting nowhere.
  std::optional<scale::SharedMemory> store;
  if (const char* url = std::getenv("SCALE_STORE_URL"); url != nullptr && *url != '\0') store.emplace(url);
  scale::ProcessPoolManager pool({.max_workers = 4});
  if (store) pool.report_to(*store, "06-progress");
  scale::Iterator<int> items(std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8}, pool);
  scale::RunOptions options;
  options.chunk_size = 1;  // one item per chunk: 8 chunks over 4 workers
  options.on_progress = draw;
  try {
    std::vector<int> squares = runtime.run([&] { return items.map(long_item, options); });
    assert((squares == std::vector<int>{1, 4, 9, 16, 25, 36, 49, 64}));
    std::fprintf(stderr, "done: 8 squares\n");
    return 0;
  } catch (const scale::Cancelled&) {
    std::fprintf(stderr, "\nstopped: the map was cancelled\n");
    return 130;
  }
}
