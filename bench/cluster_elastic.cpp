// ClusterManager elasticity, on one redis-server this benchmark starts on a free loopback port,
// with worker processes of this very binary (started with --scale-worker redis://..., stopped by
// their pids), each figure against its ideal from the same run:
//   (a) 400 items of 20 ms, 8 workers joined before the call: elapsed against 400 x 20 ms / 8.
//       Target <= 1.25x.
//   (b) the same with 1 worker at the start and 7 joining 1 s after the call started: elapsed
//       against 1 s + (the work left after 1 s on one worker) / 8. Target <= 1.25x. Also: how
//       long after its start (fork) each joiner ran its first item, an upper bound on the time
//       after its first heartbeat (target 250 ms).
//   (c) uneven items (item i sleeps i % 10 ms), 1600 of them on 8 workers: makespan against total
//       work / 8. Target <= 1.2x.
// Items sleep, so 8 workers share a 2-core machine well. Each figure is the median of 3 runs.
//
//   make bench        (or: build/bench/cluster_elastic)

#include <scale/iterator.hpp>
#include <scale/managers/cluster.hpp>
#include <scale/runtime.hpp>

#include "support/redis_for_bench.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

using bench::WorkerProcess;
using support::monotonic_us;

/// (2x, the pid that ran it, when it started).
constexpr auto sleep_20ms = [](int x) {
  const std::int64_t started = monotonic_us();
  std::this_thread::sleep_for(20ms);
  return std::tuple<int, int, std::int64_t>(2 * x, static_cast<int>(::getpid()), started);
};

constexpr auto sleep_i_mod_10_ms = [](int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(x % 10));
  return 2 * x;
};

using Workers = std::vector<std::unique_ptr<WorkerProcess>>;

void start_workers(Workers& workers, const std::string& url, int n) {
  for (int i = 0; i < n; ++i) workers.push_back(std::make_unique<WorkerProcess>(url));
}

bool wait_for(const scale::ClusterManager& manager, std::size_t n) {
  const auto deadline = Clock::now() + 20s;
  while (manager.stats().workers_alive < n) {
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "cluster_elastic: %zu workers did not join within 20 s\n", n);
      return false;
    }
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

std::vector<int> iota(int n) {
  std::vector<int> items(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) items[static_cast<std::size_t>(i)] = i;
  return items;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

int g_namespace = 0;
std::string fresh(const std::string& base) { return base + "?namespace=elastic" + std::to_string(g_namespace++); }

bool check_20ms(const std::vector<std::tuple<int, int, std::int64_t>>& result, std::size_t n) {
  if (result.size() != n) return false;
  for (std::size_t i = 0; i < n; ++i)
    if (std::get<0>(result[i]) != 2 * static_cast<int>(i)) return false;
  return true;
}

/// (a): seconds for 400 items of 20 ms on 8 workers joined before the call.
std::optional<double> joined_before(const std::string& base) {
  const std::string url = fresh(base);
  Workers workers;
  start_workers(workers, url, 8);
  scale::ClusterManager manager(url);
  if (!wait_for(manager, 8)) return std::nullopt;
  scale::Iterator<int> numbers(iota(400), manager);
  const auto start = Clock::now();
  const auto result = numbers.map(sleep_20ms).get();
  const double elapsed = seconds_since(start);
  if (!check_20ms(result, 400)) return std::nullopt;
  return elapsed;
}

struct Joining {
  double elapsed = 0;           // seconds
  double first_item_after = 0;  // the slowest joiner: its first item after its start, seconds
  std::size_t joiners_used = 0;
};

/// (b): 1 worker at the start, 7 more 1 s into the call.
std::optional<Joining> joining_later(const std::string& base) {
  const std::string url = fresh(base);
  Workers workers;
  start_workers(workers, url, 1);
  scale::ClusterManager manager(url);
  if (!wait_for(manager, 1)) return std::nullopt;
  scale::Iterator<int> numbers(iota(400), manager);
  const auto start = Clock::now();
  auto pending = numbers.map(sleep_20ms);
  std::this_thread::sleep_until(start + 1s);
  Workers joiners;
  start_workers(joiners, url, 7);
  const auto result = std::move(pending).get();
  Joining figures;
  figures.elapsed = seconds_since(start);
  if (!check_20ms(result, 400)) return std::nullopt;
  std::map<int, std::int64_t> first_item;
  for (auto& [value, pid, started] : result) {
    auto [at, inserted] = first_item.emplace(pid, started);
    if (!inserted) at->second = std::min(at->second, started);
  }
  for (auto& joiner : joiners) {
    auto at = first_item.find(joiner->pid());
    if (at == first_item.end()) continue;
    ++figures.joiners_used;
    figures.first_item_after = std::max(figures.first_item_after, (at->second - joiner->started_us()) / 1e6);
  }
  return figures;
}

/// (c): makespan of 1600 uneven items on 8 workers.
std::optional<double> uneven(const std::string& base) {
  const std::string url = fresh(base);
  Workers workers;
  start_workers(workers, url, 8);
  scale::ClusterManager manager(url);
  if (!wait_for(manager, 8)) return std::nullopt;
  scale::Iterator<int> numbers(iota(1600), manager);
  const auto start = Clock::now();
  const auto result = numbers.map(sleep_i_mod_10_ms).get();
  const double elapsed = seconds_since(start);
  for (std::size_t i = 0; i < result.size(); ++i)
    if (result[i] != 2 * static_cast<int>(i)) return std::nullopt;
  return elapsed;
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // as a --scale-worker: serves tasks until SIGTERM, then exits
  const auto server = bench::redis_or_skip("cluster_elastic");  // killed by its pid when main returns
  if (!server) return 0;
  const support::RedisServer& redis = *server;
  constexpr int runs = 3;
  std::vector<double> a, b, b_first, c;
  std::size_t b_joiners = 7;
  for (int run = 0; run < runs; ++run) {
    const auto before = joined_before(redis.url());
    const auto later = joining_later(redis.url());
    const auto spread = uneven(redis.url());
    if (!before || !later || !spread) {
      std::fprintf(stderr, "cluster_elastic: a map failed or returned wrong results\n");
      return 1;
    }
    a.push_back(*before);
    b.push_back(later->elapsed);
    b_first.push_back(later->first_item_after);
    b_joiners = std::min(b_joiners, later->joiners_used);
    c.push_back(*spread);
  }
  // Ideals: (a) 400 x 20 ms / 8; (b) one worker runs 1 s (50 items), the other 350 spread over 8;
  // (c) sum of i % 10 ms over 1600 items, over 8 workers.
  const double ideal_a = 400 * 0.020 / 8;
  const double ideal_b = 1.0 + (400 - 1.0 / 0.020) * 0.020 / 8;
  double work_c = 0;
  for (int i = 0; i < 1600; ++i) work_c += (i % 10) / 1000.0;
  const double ideal_c = work_c / 8;

  const double ma = median(a), mb = median(b), mc = median(c);
  std::printf("cluster elasticity (median of %d runs)                    scale     ideal   ratio  target\n", runs);
  std::printf("(a) 400 x 20 ms, 8 workers joined before                %6.3f s  %6.3f s  %5.2fx  <= 1.25x\n", ma,
              ideal_a, ma / ideal_a);
  std::printf("(b) 400 x 20 ms, 1 worker, 7 more join after 1 s        %6.3f s  %6.3f s  %5.2fx  <= 1.25x\n", mb,
              ideal_b, mb / ideal_b);
  std::printf("    a joiner's first item after its start (slowest)     %6.3f s  %6.3f s          (<= 250 ms after its "
              "first heartbeat; %zu of 7 joiners ran items)\n",
              median(b_first), 0.250, b_joiners);
  std::printf("(c) 1600 items of i %% 10 ms on 8 workers (makespan)    %6.3f s  %6.3f s  %5.2fx  <= 1.2x\n", mc,
              ideal_c, mc / ideal_c);
  return 0;
}
