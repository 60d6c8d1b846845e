// Affinity by key on the cluster, on one redis-server this benchmark starts on a free loopback
// port (and kills by its pid at the end), with 3 workers of this very binary (--scale-worker
// redis://...). Each worker process keeps a per-key cache of bounded size, as real caches are (an
// LRU of 20 keys: fewer than a call's 50 keys, more than the ~17 one worker serves with keyed_by),
// and each item returns whether its key was a hit. A map
// of N items (default 2000) over 50 keys runs without keyed_by and with it, each round on fresh
// keys (so every round starts cold), a few rounds each, taken in turn. Figures: the hit rate of
// each (hits / items, summed over the rounds), and the ratio. Target: >= 95% with keyed_by (each
// key misses once, on its one worker); without it each worker meets every key and the LRU
// evicts them before they come back. Figures are reported, never asserted.
//
//   make bench        (or: build/bench/cluster_affinity [items, default 2000])

#include <scale/iterator.hpp>
#include <scale/managers/cluster.hpp>
#include <scale/runtime.hpp>

#include "support/redis_for_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int keys = 50;
constexpr std::size_t cache_capacity = 20;  // keys a worker's cache holds
constexpr int rounds = 3;

/// An item: its round (each round's keys are new) times a million, plus its index.
using Item = int;
constexpr int per_round = 1'000'000;

std::string key_of(Item item) { return std::to_string(item / per_round) + ":" + std::to_string(item % per_round % keys); }

/// 1 when this worker process had the item's key cached already, else 0 (it caches it now).
constexpr auto cached = [](Item item) {
  static std::mutex mutex;
  static std::list<std::string> recent;  // most recently used first
  static std::map<std::string, std::list<std::string>::iterator> cache;
  std::lock_guard lock(mutex);
  const std::string key = key_of(item);
  if (auto at = cache.find(key); at != cache.end()) {
    recent.splice(recent.begin(), recent, at->second);
    return 1;
  }
  recent.push_front(key);
  cache.emplace(key, recent.begin());
  if (cache.size() > cache_capacity) {
    cache.erase(recent.back());
    recent.pop_back();
  }
  return 0;
};

constexpr auto key_fn = [](const Item& item) { return key_of(item); };

std::vector<Item> items_of(int round, std::size_t n) {
  std::vector<Item> items(n);
  for (std::size_t i = 0; i < n; ++i) items[i] = round * per_round + static_cast<int>(i);
  return items;
}

std::unique_ptr<support::WorkerProcess> worker(const std::string& url) {
  support::WorkerOptions options;
  options.heartbeat = 0ms;
  options.stop_grace = 5s;
  return std::make_unique<support::WorkerProcess>(url, options);
}

bool wait_for(const scale::ClusterManager& manager, std::size_t workers) {
  const auto deadline = Clock::now() + 20s;
  while (manager.stats().workers_alive < workers) {
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "cluster_affinity: %zu workers did not join within 20 s\n", workers);
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

/// Hits of one map over `items`, keyed or not; -1 when the results are wrong.
long hits(scale::ClusterManager& manager, std::vector<Item> items, bool keyed) {
  const std::size_t n = items.size();
  scale::Iterator<Item> all(std::move(items), manager);
  std::vector<int> hit = keyed ? all.keyed_by(key_fn).map(cached).get() : all.map(cached).get();
  if (hit.size() != n) return -1;
  return std::accumulate(hit.begin(), hit.end(), 0L);
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // as a --scale-worker: serves tasks until SIGTERM, then exits
  const std::size_t items = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 2000;
  if (items == 0) {
    std::fprintf(stderr, "usage: cluster_affinity [items > 0]\n");
    return 2;
  }
  const auto server = bench::redis_or_skip("cluster_affinity");  // killed by its pid when main returns
  if (!server) return 0;

  const std::string url = server->url() + "?namespace=affinity";
  auto a = worker(url), b = worker(url), c = worker(url);
  scale::ClusterManager manager(url);
  if (!wait_for(manager, 3)) return 1;

  long plain = 0, keyed = 0;
  double plain_s = 0, keyed_s = 0;
  for (int round = 0; round < rounds; ++round) {
    auto start = Clock::now();
    const long without = hits(manager, items_of(2 * round, items), false);
    plain_s += std::chrono::duration<double>(Clock::now() - start).count();
    start = Clock::now();
    const long with = hits(manager, items_of(2 * round + 1, items), true);
    keyed_s += std::chrono::duration<double>(Clock::now() - start).count();
    if (without < 0 || with < 0) {
      std::fprintf(stderr, "cluster_affinity: a wrong result\n");
      return 1;
    }
    plain += without;
    keyed += with;
  }
  const double total = static_cast<double>(items) * rounds;
  const double plain_rate = 100.0 * static_cast<double>(plain) / total;
  const double keyed_rate = 100.0 * static_cast<double>(keyed) / total;
  std::printf("cluster, 3 workers, %zu items over %d keys, LRU of %zu keys per worker, %d rounds   hit rate   ms/call   target\n", items, keys, cache_capacity,
              rounds);
  std::printf("without keyed_by                                      %7.1f%%  %8.1f\n", plain_rate,
              1000 * plain_s / rounds);
  std::printf("keyed_by(key)                                         %7.1f%%  %8.1f   >= 95%%\n", keyed_rate,
              1000 * keyed_s / rounds);
  std::printf("misses without / with keyed_by                        %7.2fx\n",
              static_cast<double>(total - static_cast<double>(plain)) /
                  std::max(1.0, total - static_cast<double>(keyed)));
  std::printf("hit rate ratio with / without                         %7.3f\n", keyed_rate / plain_rate);
  return 0;
}
