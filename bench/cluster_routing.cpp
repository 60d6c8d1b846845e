// Routing on the cluster, on one redis-server this benchmark starts on a free loopback port (and
// kills by its pid at the end), with workers of this very binary (--scale-worker redis://...):
//   - chunks/s of a map of N trivial items with chunk size 1 on 2 workers that provide gpu=1000,
//     without a requirement and with RunOptions::resources = {gpu: 1} (a class stream of its own,
//     amounts held while each chunk runs); best of a few runs each, taken in turn. Target: the
//     call with resources loses at most 5%.
//   - the latency of a call that needs nothing (20 trivial items, chunk size 1) on 3 workers, one
//     of which provides gpu=1, while idle and while a gpu map keeps that worker busy (items of
//     20 ms, all of them queued for it); the median of a few calls. Target: within 2x of idle.
// Figures are reported, never asserted.
//
//   make bench        (or: build/bench/cluster_routing [items, default 10000])

#include <scale/iterator.hpp>
#include <scale/managers/cluster.hpp>
#include <scale/runtime.hpp>

#include "support/redis_for_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto twice = [](int x) { return 2 * x; };

constexpr auto twice_in_20ms = [](int x) {
  std::this_thread::sleep_for(20ms);
  return 2 * x;
};

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::vector<int> iota(std::size_t n) {
  std::vector<int> values(n);
  std::iota(values.begin(), values.end(), 0);
  return values;
}

/// A worker of this binary with `flags` after --scale-worker URL, stopped by its pid.
std::unique_ptr<support::WorkerProcess> worker(const std::string& url, std::vector<std::string> flags) {
  support::WorkerOptions options;
  options.heartbeat = 0ms;
  options.stop_grace = 5s;
  options.extra = std::move(flags);
  return std::make_unique<support::WorkerProcess>(url, options);
}

bool wait_for(const scale::ClusterManager& manager, std::size_t workers) {
  const auto deadline = Clock::now() + 20s;
  while (manager.stats().workers_alive < workers) {
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "cluster_routing: %zu workers did not join within 20 s\n", workers);
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

scale::RunOptions one_per_chunk(bool gpu) {
  scale::RunOptions options;
  options.chunk_size = 1;
  if (gpu) options.resources = {{"gpu", 1}};
  return options;
}

/// Chunks/s of one map of `items` with chunk size 1, or nothing when a result is wrong.
std::optional<double> rate(const scale::Iterator<int>& numbers, std::size_t items, bool gpu) {
  const auto start = Clock::now();
  const std::vector<int> result = numbers.map(twice, one_per_chunk(gpu)).get();
  const double rate = static_cast<double>(items) / seconds_since(start);
  if (result.size() != items) return std::nullopt;
  for (std::size_t i = 0; i < items; ++i)
    if (result[i] != 2 * static_cast<int>(i)) return std::nullopt;
  return rate;
}

/// Milliseconds of a call of 20 trivial items that needs nothing: the median of `calls`.
double latency_ms(scale::ClusterManager& manager, int calls) {
  scale::Iterator<int> few(iota(20), manager);
  std::vector<double> times;
  for (int i = 0; i < calls; ++i) {
    const auto start = Clock::now();
    few.map(twice, one_per_chunk(false)).get();
    times.push_back(seconds_since(start) * 1000);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // as a --scale-worker: serves tasks until SIGTERM, then exits
  const std::size_t items = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 10'000;
  if (items == 0) {
    std::fprintf(stderr, "usage: cluster_routing [items > 0]\n");
    return 2;
  }
  const auto server = bench::redis_or_skip("cluster_routing");  // killed by its pid when main returns
  if (!server) return 0;

  double plain = 0, with_resources = 0;
  {
    const std::string url = server->url() + "?namespace=throughput";
    auto a = worker(url, {"--scale-provides", "gpu=1000"});
    auto b = worker(url, {"--scale-provides", "gpu=1000"});
    scale::ClusterManager manager(url);
    if (!wait_for(manager, 2)) return 1;
    scale::Iterator<int> numbers(iota(items), manager);
    scale::Iterator<int> warm(iota(100), manager);
    if (!rate(warm, 100, false) || !rate(warm, 100, true)) return 1;
    for (int run = 0; run < 3; ++run) {
      const auto without = rate(numbers, items, false);
      const auto with = rate(numbers, items, true);
      if (!without || !with) {
        std::fprintf(stderr, "cluster_routing: a wrong result\n");
        return 1;
      }
      plain = std::max(plain, *without);
      with_resources = std::max(with_resources, *with);
    }
  }

  double idle = 0, saturated = 0;
  {
    const std::string url = server->url() + "?namespace=latency";
    auto gpu = worker(url, {"--scale-provides", "gpu=1"});
    auto a = worker(url, {});
    auto b = worker(url, {});
    scale::ClusterManager manager(url);
    if (!wait_for(manager, 3)) return 1;
    latency_ms(manager, 3);  // warm
    idle = latency_ms(manager, 15);
    scale::Iterator<int> frames(iota(400), manager);
    auto busy = frames.map(twice_in_20ms, one_per_chunk(true));
    std::this_thread::sleep_for(200ms);  // the gpu worker has started on them
    saturated = latency_ms(manager, 15);
    if (busy.ready()) std::fprintf(stderr, "cluster_routing: the gpu map ended before the latency was measured\n");
    std::move(busy).get();
  }

  std::printf("cluster, 2 workers, %zu items, chunk size 1     chunks/s     change   target\n", items);
  std::printf("no requirement                              %10.0f\n", plain);
  std::printf("resources {gpu: 1}                          %10.0f   %+6.1f%%   >= -5%%\n", with_resources,
              100.0 * (with_resources / plain - 1.0));
  std::printf("call needing nothing (20 items), 3 workers  median ms    ratio    target\n");
  std::printf("idle cluster                                %10.1f\n", idle);
  std::printf("while the only gpu worker is saturated      %10.1f   %6.2fx   <= 2x\n", saturated, saturated / idle);
  return 0;
}
