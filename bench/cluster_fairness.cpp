// Two ClusterManagers sharing four workers, on one redis-server this benchmark starts on a free
// loopback port (and kills by its pid at the end), with workers of this very binary
// (--scale-worker redis://...): the first starts a map of 400 items of 20 ms, the second the same
// 0.5 s later. The figure is the second's share of the worker time spent while both had items
// running (from the second's start to the end of whichever finished first), from the items' own
// start and end times. Target: 40-60% (before managers were served in turn, ~0 until the first
// drained).
//
// Both managers live in this one process, on its one Runtime (a process has one Runtime; managers
// are independent of each other, each with its own id, Redis connections and streams, so to the
// workers and to Redis they are two managers). Measured twice, with the workers' and managers'
// heartbeats at 100 ms and at 1 s (the defaults, where the matcher scans once a second):
//   - round robin alone: the benchmark holds the matcher's lease itself, so no manager matches;
//   - with the matcher: as a cluster runs (docs/routing.md, "Fair shares and sites").
// Here every worker and manager is on one host, equally near each other, so the matcher assigns
// nothing (an assignment is kept only where it shortens a path) and the two agree: the rows show
// that the matcher costs the round robin's fairness nothing. tests/cluster_matcher_test.cpp shows
// workers on other hosts going to their own site's manager.
// Figures are reported, never asserted.
//
//   make bench        (or: build/bench/cluster_fairness [items, default 400])

#include <scale/iterator.hpp>
#include <scale/managers/cluster.hpp>
#include <scale/runtime.hpp>

#include "support/redis_for_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using Span = std::pair<std::int64_t, std::int64_t>;  // monotonic microseconds

constexpr auto span_of_20ms = [](int) {
  const std::int64_t started = support::monotonic_us();
  std::this_thread::sleep_for(20ms);
  return Span(started, support::monotonic_us());
};

std::vector<int> iota(std::size_t n) {
  std::vector<int> values(n);
  std::iota(values.begin(), values.end(), 0);
  return values;
}

bool wait_for(const scale::ClusterManager& manager, std::size_t workers) {
  const auto deadline = Clock::now() + 20s;
  while (manager.stats().workers_alive < workers) {
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "cluster_fairness: %zu workers did not join within 20 s\n", workers);
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

/// The worker time (microseconds) of `spans` within [from, to).
std::int64_t time_within(const std::vector<Span>& spans, std::int64_t from, std::int64_t to) {
  std::int64_t sum = 0;
  for (const auto& [start, end] : spans) sum += std::max<std::int64_t>(0, std::min(end, to) - std::max(start, from));
  return sum;
}

struct Run {
  double share = 0;       // the second's share of the worker time while both ran
  double overlap_s = 0;   // how long both ran
  double total_s = 0;     // from the first's start to the end of both
};

/// One run in namespace `name`: 4 workers, two managers 0.5 s apart. `matcher`: false holds the
/// lease for the benchmark, so that workers rotate over the managers by round robin alone.
std::optional<Run> run(const support::RedisServer& server, const std::string& name, std::size_t items,
                       std::chrono::milliseconds heartbeat, bool matcher) {
  const std::string url = server.url() + "?namespace=" + name;
  if (!matcher) {
    const std::string hold = "redis-cli -h 127.0.0.1 -p " + std::to_string(server.port()) + " SET '{scale:" + name +
                             "}:matcher' cluster_fairness PX 600000 >/dev/null";
    if (std::system(hold.c_str()) != 0) {
      std::fprintf(stderr, "cluster_fairness: redis-cli could not hold the matcher's lease\n");
      return std::nullopt;
    }
  }
  std::vector<std::unique_ptr<support::WorkerProcess>> workers;
  for (int i = 0; i < 4; ++i) {
    support::WorkerOptions options;
    options.heartbeat = heartbeat;
    options.stop_grace = 5s;
    workers.push_back(std::make_unique<support::WorkerProcess>(url, options));
  }
  scale::ClusterOptions options;
  options.heartbeat_interval = heartbeat;
  options.heartbeat_ttl = 3 * heartbeat;
  scale::ClusterManager first(url, options), second(url, options);
  if (!wait_for(first, 4) || !wait_for(second, 4)) return std::nullopt;

  scale::Iterator<int> a(iota(items), first), b(iota(items), second);
  const std::int64_t started = support::monotonic_us();
  auto from_first = a.map(span_of_20ms);
  std::this_thread::sleep_for(500ms);
  const std::int64_t second_started = support::monotonic_us();
  auto from_second = b.map(span_of_20ms);
  const std::vector<Span> of_first = std::move(from_first).get();
  const std::vector<Span> of_second = std::move(from_second).get();
  if (of_first.size() != items || of_second.size() != items) return std::nullopt;

  auto last_end = [](const std::vector<Span>& spans) {
    std::int64_t last = 0;
    for (const auto& [start, end] : spans) last = std::max(last, end);
    return last;
  };
  const std::int64_t both_until = std::min(last_end(of_first), last_end(of_second));
  const std::int64_t to_second = time_within(of_second, second_started, both_until);
  const std::int64_t to_first = time_within(of_first, second_started, both_until);
  Run result;
  result.share = to_first + to_second > 0 ? static_cast<double>(to_second) / static_cast<double>(to_first + to_second) : 0;
  result.overlap_s = static_cast<double>(both_until - second_started) / 1e6;
  result.total_s = static_cast<double>(std::max(last_end(of_first), last_end(of_second)) - started) / 1e6;
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // as a --scale-worker: serves tasks until SIGTERM, then exits
  const std::size_t items = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 400;
  if (items == 0) {
    std::fprintf(stderr, "usage: cluster_fairness [items > 0]\n");
    return 2;
  }
  const auto server = bench::redis_or_skip("cluster_fairness");  // killed by its pid when main returns
  if (!server) return 0;

  std::printf("2 managers 0.5 s apart, %zu items of 20 ms each, 4 workers   second's share   both ran   target   met\n",
              items);
  int n = 0;
  for (const auto heartbeat : {100ms, 1000ms})
    for (const bool matcher : {false, true}) {
      const auto result = run(*server, "fair" + std::to_string(n++), items, heartbeat, matcher);
      if (!result) {
        std::fprintf(stderr, "cluster_fairness: a run failed\n");
        return 1;
      }
      const bool met = result->share >= 0.40 && result->share <= 0.60;
      std::printf("heartbeats %4lld ms, %-30s               %5.1f%%   %6.2f s   40-60%%   %s\n",
                  static_cast<long long>(heartbeat.count()), matcher ? "with the matcher" : "round robin alone (no matcher)",
                  100.0 * result->share, result->overlap_s, met ? "yes" : "no");
    }
  return 0;
}
