// ClusterManager against BullMQ, on one redis-server this benchmark starts on a free loopback
// port (and kills by its pid at the end), measured in the same run:
//   - scale: a map of N trivial items (x -> 2x) on a ClusterManager with 2 local workers (child
//     processes of this binary started with --scale-worker redis://...), with automatic chunks
//     and with chunk size 1; items/s from the call to the last result, best of a few runs;
//   - BullMQ (bench/bullmq, Node.js): the same N trivial jobs added with addBulk and processed
//     by 2 worker processes; jobs/s from the first add to the last completion. BullMQ runs with
//     1 (its default) and 10 jobs at once per worker, and the better figure is the peer's.
//   - latency: a map of one item, awaited 500 times in a row, against a raw round trip through
//     the same redis-server (one hiredis client XADDs to a stream that a second, blocked in
//     XREADGROUP, answers by XADD to a reply stream the first is blocked on with XREAD).
// Targets (reported, never asserted): >= 5x BullMQ's jobs/s with automatic chunks and with
// chunk size 1; one-item latency <= 2x the raw round trip. Without node or npm, BullMQ's figure is
// skipped and the reason printed. Every line is recorded in results.json (bench/support/results.hpp).
//
//   make bench        (or: build/bench/cluster_vs_bullmq [items, default 20000])

#include <scale/iterator.hpp>
#include <scale/managers/cluster.hpp>
#include <scale/runtime.hpp>

#include "support/redis_for_bench.hpp"
#include "support/results.hpp"

#include <hiredis/hiredis.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#ifndef SCALE_BENCH_BULLMQ_DIR
#error "SCALE_BENCH_BULLMQ_DIR (the bench/bullmq folder) is set by bench/CMakeLists.txt"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto twice = [](int x) { return 2 * x; };

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

using bench::have;

struct ScaleFigures {
  double auto_rate = 0;   // items/s, automatic chunks
  double one_rate = 0;    // items/s, chunk size 1
  double one_item_us = 0;  // mean latency of a one-item map
};

constexpr int latency_rounds = 500;

/// Mean microseconds of a one-item map on `manager`, awaited `latency_rounds` times in a row.
double one_item_latency_us(scale::ScalabilityManager& manager) {
  scale::Iterator<int> one(std::vector<int>{21}, manager);
  one.map(twice).get();
  const auto start = Clock::now();
  for (int i = 0; i < latency_rounds; ++i) (void)one.map(twice).get();
  return seconds_since(start) * 1e6 / latency_rounds;
}

/// Mean microseconds of a raw round trip through redis-server: XADD a request, a second client
/// blocked in XREADGROUP reads it and XADDs the answer, which the first reads with a blocking
/// XREAD. Negative when a command fails.
double raw_stream_round_trip_us(int port) {
  redisContext* ask = redisConnect("127.0.0.1", port);
  redisContext* answer = redisConnect("127.0.0.1", port);
  if (!ask || ask->err || !answer || answer->err) return -1;
  auto command = [](redisContext* c, const char* format, auto... args) {
    auto* reply = static_cast<redisReply*>(redisCommand(c, format, args...));
    const bool ok = reply && reply->type != REDIS_REPLY_ERROR;
    if (reply) freeReplyObject(reply);
    return ok;
  };
  command(ask, "DEL bench:rt:req bench:rt:rep");
  if (!command(ask, "XGROUP CREATE bench:rt:req g $ MKSTREAM")) return -1;
  constexpr int rounds = 2'000;
  std::thread server([&] {
    for (int i = 0; i < rounds + 100; ++i) {
      auto* reply = static_cast<redisReply*>(
          redisCommand(answer, "XREADGROUP GROUP g c COUNT 1 BLOCK 0 STREAMS bench:rt:req >"));
      if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        if (reply) freeReplyObject(reply);
        return;
      }
      const redisReply* entry = reply->element[0]->element[1]->element[0];
      const std::string id(entry->element[0]->str, entry->element[0]->len);
      freeReplyObject(reply);
      command(answer, "XADD bench:rt:rep * v 1");
      command(answer, "XACK bench:rt:req g %s", id.c_str());
    }
  });
  std::string last = "0";
  auto round_trip = [&] {
    if (!command(ask, "XADD bench:rt:req * v 1")) return false;
    auto* reply = static_cast<redisReply*>(redisCommand(ask, "XREAD COUNT 1 BLOCK 0 STREAMS bench:rt:rep %s", last.c_str()));
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
      if (reply) freeReplyObject(reply);
      return false;
    }
    const redisReply* id = reply->element[0]->element[1]->element[0]->element[0];
    last.assign(id->str, id->len);
    freeReplyObject(reply);
    return true;
  };
  bool ok = true;
  for (int i = 0; i < 100 && ok; ++i) ok = round_trip();  // warm
  const auto start = Clock::now();
  for (int i = 0; i < rounds && ok; ++i) ok = round_trip();
  const double us = seconds_since(start) * 1e6 / rounds;
  server.join();
  command(ask, "DEL bench:rt:req bench:rt:rep");
  redisFree(ask);
  redisFree(answer);
  return ok ? us : -1;
}

/// Best items/s of `runs` maps over `numbers` (0, 1, ..., items - 1); nothing when a result is wrong.
std::optional<double> measure(const scale::Iterator<int>& numbers, std::size_t items, std::size_t chunk_size,
                              int runs) {
  double best = 0;
  for (int run = 0; run < runs; ++run) {
    scale::RunOptions options;
    options.chunk_size = chunk_size;
    const auto start = Clock::now();
    std::vector<int> result = numbers.map(twice, options).get();
    const double rate = static_cast<double>(items) / seconds_since(start);
    if (result.size() != items) {
      std::fprintf(stderr, "cluster_vs_bullmq: %zu results for %zu items\n", result.size(), items);
      return std::nullopt;
    }
    for (std::size_t i = 0; i < items; ++i)
      if (result[i] != 2 * static_cast<int>(i)) {
        std::fprintf(stderr, "cluster_vs_bullmq: wrong result at item %zu\n", i);
        return std::nullopt;
      }
    best = std::max(best, rate);
  }
  return best;
}

std::optional<ScaleFigures> measure_scale(const std::string& url, std::size_t items) {
  std::unique_ptr<bench::WorkerProcess> first, second;
  try {
    first = std::make_unique<bench::WorkerProcess>(url);
    second = std::make_unique<bench::WorkerProcess>(url);
  } catch (const std::exception&) {
    std::fprintf(stderr, "cluster_vs_bullmq: could not start the workers\n");
    return std::nullopt;
  }
  scale::ClusterOptions cluster_options;
  cluster_options.wait_for_workers = 20s;
  scale::ClusterManager manager(url, cluster_options);
  const auto deadline = Clock::now() + 20s;
  while (manager.stats().workers_alive < 2) {
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "cluster_vs_bullmq: the 2 workers did not join within 20 s\n");
      return std::nullopt;
    }
    std::this_thread::sleep_for(20ms);
  }
  std::vector<int> values(items);
  std::iota(values.begin(), values.end(), 0);
  scale::Iterator<int> numbers(values, manager);
  const std::vector<int> warm_values(values.begin(),
                                     values.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(items, 100)));
  scale::Iterator<int> warm(warm_values, manager);
  if (!measure(warm, warm_values.size(), 1, 1)) return std::nullopt;  // both workers have run a chunk
  const std::optional<double> auto_rate = measure(numbers, items, 0, 5);
  const std::optional<double> one_rate = auto_rate ? measure(numbers, items, 1, 2) : std::nullopt;
  if (!auto_rate || !one_rate) return std::nullopt;
  return ScaleFigures{*auto_rate, *one_rate, one_item_latency_us(manager)};
}

/// BullMQ's jobs/s with `concurrency` jobs at once per worker, or the reason it has none.
std::pair<double, std::string> bullmq(int port, std::size_t jobs, int concurrency) {
  const std::string dir = SCALE_BENCH_BULLMQ_DIR;
  if (!have("node")) return {0, "node not found: install Node.js (>= 18) to measure BullMQ"};
  struct stat info {};
  if (::stat((dir + "/node_modules/bullmq").c_str(), &info) != 0) {
    if (!have("npm")) return {0, "npm not found: install npm to fetch BullMQ (npm ci in bench/bullmq)"};
    std::fprintf(stderr, "cluster_vs_bullmq: installing BullMQ (npm ci in %s)\n", dir.c_str());
    const std::string install = "cd '" + dir + "' && npm ci --no-audit --no-fund --loglevel=error 1>&2";
    if (std::system(install.c_str()) != 0) return {0, "npm ci failed in " + dir + " (is the npm registry reachable?)"};
  }
  const std::string command = "cd '" + dir + "' && node bench.js " + std::to_string(port) + " " + std::to_string(jobs) +
                              " " + std::to_string(concurrency);
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return {0, "could not run node"};
  double rate = 0;
  long completed = 0;
  const bool parsed = std::fscanf(pipe, "%lf %ld", &rate, &completed) == 2;
  const int status = ::pclose(pipe);
  if (!parsed || status != 0 || completed != static_cast<long>(jobs))
    return {0, "bench/bullmq/bench.js failed (see above)"};
  return {rate, ""};
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // as a --scale-worker: serves tasks until SIGTERM, then exits
  const std::size_t items = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 20'000;
  if (items == 0) {
    std::fprintf(stderr, "usage: cluster_vs_bullmq [items > 0]\n");
    return 2;
  }
  const auto server = bench::redis_or_skip("cluster_vs_bullmq");  // killed by its pid when main returns
  if (!server) return 0;
  const support::RedisServer& redis = *server;
  const std::optional<ScaleFigures> scale_figures = measure_scale(redis.url(), items);
  if (!scale_figures) return 1;
  const auto [bull_1, why_1] = bullmq(redis.port(), items, 1);
  const auto [bull_10, why_10] = why_1.empty() ? bullmq(redis.port(), items, 10)
                                               : std::pair<double, std::string>{0, why_1};
  const double peer = std::max(bull_1, bull_10);

  std::printf("cluster, 2 workers, %zu items      scale              BullMQ             ratio  target\n", items);
  if (peer > 0) {
    std::printf("automatic chunks                   %12.0f it/s  %12.0f jobs/s %6.1fx  >= 5x\n",
                scale_figures->auto_rate, peer, scale_figures->auto_rate / peer);
    std::printf("chunk size 1                       %12.0f it/s  %12.0f jobs/s %6.1fx  >= 5x\n",
                scale_figures->one_rate, peer, scale_figures->one_rate / peer);
    scale_bench::record({"cluster_vs_bullmq", "automatic chunks, 2 workers", "items/s", scale_figures->auto_rate,
                         "BullMQ", peer, ">=", 5.0});
    scale_bench::record({"cluster_vs_bullmq", "chunk size 1, 2 workers", "items/s", scale_figures->one_rate, "BullMQ",
                         peer, ">=", 5.0});
    if (why_10.empty())
      std::printf(
          "(BullMQ, 1 job at once per worker: %.0f jobs/s; 10 at once: %.0f jobs/s; the better one is compared)\n",
          bull_1, bull_10);
    else
      std::printf("(BullMQ, 1 job at once per worker: %.0f jobs/s; 10 at once: not measured, %s)\n", bull_1,
                  why_10.c_str());
  } else {
    std::printf("automatic chunks                   %12.0f it/s  (BullMQ skipped: %s)\n", scale_figures->auto_rate,
                why_1.empty() ? why_10.c_str() : why_1.c_str());
    std::printf("chunk size 1                       %12.0f it/s  (BullMQ skipped)\n", scale_figures->one_rate);
  }
  const double raw_us = raw_stream_round_trip_us(redis.port());
  if (raw_us > 0) {
    std::printf("one-item map latency               %12.1f us    %12.1f us    %6.1fx  <= 2x (raw XADD + XREADGROUP)\n",
                scale_figures->one_item_us, raw_us, scale_figures->one_item_us / raw_us);
    scale_bench::record({"cluster_vs_bullmq", "one-item map latency", "us", scale_figures->one_item_us,
                         "raw XADD + XREADGROUP round trip", raw_us, "<=", 2.0});
  } else {
    std::printf("one-item map latency               %12.1f us    (the raw round trip failed)\n",
                scale_figures->one_item_us);
  }
  return 0;
}
