// ClusterManager under stop and progress: a stopped call's chunks leave the Redis task stream,
// running functions on workers see the stop, a --scale-processes worker's child that ignores it
// is killed after the grace while the worker stays, a --scale-threads worker that cannot stop
// its thread is given up and drains, and progress comes back from inside long items. Workers are
// this very test executable started with --scale-worker URL on a redis-server the tests start;
// main() builds the Runtime from argc/argv first, so in a worker it serves and never returns.
// Each test case uses its own namespace on the shared server and kills its workers by pid.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "support/control_app.hpp"
#include "support/progress_seen.hpp"
#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/spawn.hpp"
#include "support/worker_process.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;
using namespace support;
using Clock = std::chrono::steady_clock;

auto twice = [](int x) { return 2 * x; };

/// Counts its start in the scope, then returns at once.
auto counted = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<std::int64_t> started = scope.increment("started");
  co_await std::move(started);
  co_return x;
};

/// Counts its start, waits (up to 20 s) for the stop, and counts that it saw it.
auto waits_for_stop = [](int x, scale::Scope& scope) -> int {
  scope.increment("started").get();
  const auto until = Clock::now() + 20s;
  while (!scope.stop_requested() && Clock::now() < until) std::this_thread::sleep_for(1ms);
  if (scope.stop_requested()) scope.increment("saw_stop").get();
  return x;
};

/// Counts its start, then spins in C++ for 20 s without looking at the stop.
auto spins_ignoring_stop = [](int x, scale::Scope& scope) -> int {
  scope.increment("started").get();
  const auto until = Clock::now() + 20s;
  std::atomic<std::uint64_t> turns{0};
  while (Clock::now() < until) turns.fetch_add(1, std::memory_order_relaxed);
  return x;
};

/// Counts its start, then sleeps 3 s without looking at the stop.
auto sleeps_3s_ignoring_stop = [](int x, scale::Scope& scope) -> int {
  scope.increment("started").get();
  std::this_thread::sleep_for(3s);
  return x;
};

std::int64_t count_of(scale::SharedMemory& memory, const std::string& key) {
  auto entry = memory.entry(key).get();
  return entry ? entry->value.get<std::int64_t>() : 0;
}

/// The task stream of this build, found by its key pattern (one build per namespace here).
std::string task_stream(const std::string& url) {
  const auto keys = redis(url, {"KEYS", tag_of(url) + ":tasks:*"});
  return keys.elements.empty() ? std::string() : keys.elements[0].str;
}

std::int64_t stream_length(const std::string& url) {
  const std::string stream = task_stream(url);
  return stream.empty() ? 0 : redis(url, {"XLEN", stream}).integer;
}

/// Entries read by a worker and not acknowledged, in the workers' group.
std::int64_t pending_count(const std::string& url) {
  const std::string stream = task_stream(url);
  if (stream.empty()) return 0;
  const auto summary = redis(url, {"XPENDING", stream, "workers"});
  return summary.elements.empty() ? 0 : summary.elements[0].integer;
}

std::optional<scale::ClusterWorker> worker_with_pid(const scale::ClusterManager& manager, pid_t pid) {
  for (auto& worker : manager.workers())
    if (worker.pid == pid) return worker;
  return std::nullopt;
}

/// A namespace of its own with a manager and a memory on it; workers are added by each test.
struct ControlCluster {
  scale::Runtime runtime;
  std::string url = fresh_url();
  scale::ClusterManager manager{url, fast_options()};
  scale::SharedMemory memory{url};

  /// Waits until the worker with `pid` has joined.
  scale::ClusterWorker joined(const WorkerProcess& worker) {
    std::optional<scale::ClusterWorker> found;
    REQUIRE(eventually([&] { return (found = worker_with_pid(manager, worker.pid())).has_value(); }));
    return *found;
  }
};


}  // namespace

TEST_CASE("a stop withdraws the call's queued chunks: the task stream keeps none and nothing is pending",
          "[cluster][control]") {
  ControlCluster cluster;
  // No worker yet: the chunks wait in the stream.
  scale::Iterator<int> numbers(iota(40), cluster.manager);
  numbers.use_scope(cluster.memory);
  std::stop_source source;
  scale::Future<std::vector<int>> call =
      numbers.map(counted, scale::RunOptions{.chunk_size = 1, .stop = source.get_token()});
  REQUIRE(eventually([&] { return stream_length(cluster.url) >= 2; }));
  const auto stopped_at = Clock::now();
  source.request_stop();
  REQUIRE_THROWS_AS(call.get(), scale::Cancelled);
  CHECK(Clock::now() - stopped_at < 2s);  // at once: no worker had them
  CHECK(stream_length(cluster.url) == 0);
  CHECK(pending_count(cluster.url) == 0);

  // A worker that comes now runs nothing of the stopped call.
  WorkerProcess worker(cluster.url);
  cluster.joined(worker);
  scale::Iterator<int> next(iota(10), cluster.manager);
  CHECK(next.map(twice).get()[9] == 18);
  CHECK(count_of(cluster.memory, "started") == 0);
  CHECK(stream_length(cluster.url) == 0);
}

TEST_CASE("a function on a cluster worker sees stop_requested(), and the chunk queued behind it never runs",
          "[cluster][control][nested]") {
  // On the worker's own thread, and in its own child process (the stop crosses the child's link).
  const std::vector<std::string> flags = GENERATE(std::vector<std::string>{"--scale-threads", "1"},
                                                  std::vector<std::string>{"--scale-processes", "1"});
  CAPTURE(flags);
  ControlCluster cluster;
  WorkerProcess worker(cluster.url, {.extra = flags});
  cluster.joined(worker);
  scale::Iterator<int> numbers(iota(6), cluster.manager);
  numbers.use_scope(cluster.memory);
  std::stop_source source;
  // A grace far longer than the test: the function returns by itself, it is not given up.
  scale::Future<std::vector<int>> call = numbers.map(
      waits_for_stop, scale::RunOptions{.chunk_size = 1, .stop = source.get_token(), .grace = 60s});
  // One chunk runs on the worker's one thread, the next waits in the stream.
  REQUIRE(eventually([&] { return count_of(cluster.memory, "started") == 1 && stream_length(cluster.url) >= 2; }));
  const auto stopped_at = Clock::now();
  source.request_stop();
  REQUIRE_THROWS_AS(call.get(), scale::Cancelled);
  CHECK(Clock::now() - stopped_at < 5s);
  CHECK(count_of(cluster.memory, "saw_stop") == 1);
  CHECK(count_of(cluster.memory, "started") == 1);
  CHECK(stream_length(cluster.url) == 0);
  CHECK(pending_count(cluster.url) == 0);
  // The worker goes on serving, and nothing of the stopped call runs there later.
  scale::Iterator<int> next(iota(10), cluster.manager);
  CHECK(next.map(twice).get()[9] == 18);
  CHECK(count_of(cluster.memory, "started") == 1);
  CHECK(cluster.manager.stats().workers_lost == 0);
}

TEST_CASE("a --scale-processes 1 worker's child that ignores the stop is killed after the grace, and the worker stays",
          "[cluster][control][nested]") {
  ControlCluster cluster;
  WorkerProcess worker(cluster.url, {.extra = {"--scale-processes", "1"}});
  const scale::ClusterWorker joined = cluster.joined(worker);
  CHECK(joined.processes);
  scale::Iterator<int> numbers(iota(4), cluster.manager);
  numbers.use_scope(cluster.memory);
  std::stop_source source;
  constexpr auto grace = 300ms;
  scale::Future<std::vector<int>> call = numbers.map(
      spins_ignoring_stop, scale::RunOptions{.chunk_size = 1, .stop = source.get_token(), .grace = grace});
  REQUIRE(eventually([&] { return count_of(cluster.memory, "started") == 1; }));
  const auto stopped_at = Clock::now();
  source.request_stop();
  REQUIRE_THROWS_AS(call.get(), scale::Cancelled);
  CHECK(Clock::now() - stopped_at < grace + 2s);
  CHECK(stream_length(cluster.url) == 0);
  CHECK(pending_count(cluster.url) == 0);
  // The same worker, still joined, runs the next map on the child that replaced the killed one.
  CHECK(worker.wait_exit(0ms) == -1);
  scale::Iterator<int> next(iota(10), cluster.manager);
  const auto started = Clock::now();
  CHECK(next.map(twice).get()[9] == 18);
  CHECK(Clock::now() - started < 5s);
  CHECK(worker_with_pid(cluster.manager, worker.pid()).has_value());
  const auto stats = cluster.manager.stats();
  CHECK(stats.workers_lost == 0);
  CHECK(stats.tasks_retried == 0);
  CHECK(count_of(cluster.memory, "started") == 1);
}

TEST_CASE("a --scale-threads worker that cannot stop its thread is given up after the grace, and drains",
          "[cluster][control]") {
  ControlCluster cluster;
  WorkerProcess worker(cluster.url, {.extra = {"--scale-threads", "1"}});
  const scale::ClusterWorker joined = cluster.joined(worker);
  CHECK_FALSE(joined.processes);
  scale::Iterator<int> numbers(iota(4), cluster.manager);
  numbers.use_scope(cluster.memory);
  std::stop_source source;
  constexpr auto grace = 300ms;
  scale::Future<std::vector<int>> call = numbers.map(
      sleeps_3s_ignoring_stop, scale::RunOptions{.chunk_size = 1, .stop = source.get_token(), .grace = grace});
  REQUIRE(eventually([&] { return count_of(cluster.memory, "started") == 1; }));
  const auto stopped_at = Clock::now();
  source.request_stop();
  REQUIRE_THROWS_AS(call.get(), scale::Cancelled);
  // Given up after the grace, not when the item's 3 s are over.
  CHECK(Clock::now() - stopped_at < grace + 2s);
  CHECK(stream_length(cluster.url) == 0);
  CHECK(pending_count(cluster.url) == 0);
  // Told that no one waits for its chunk, the worker takes nothing more and leaves once it returns.
  REQUIRE(eventually([&] {
    auto seen = worker_with_pid(cluster.manager, worker.pid());
    return !seen || seen->draining;
  }));
  CHECK(worker.wait_exit(10s) == 0);
  CHECK(cluster.manager.stats().workers_lost == 0);
  CHECK(count_of(cluster.memory, "started") == 1);
}

TEST_CASE("progress moves inside long items on cluster workers, threads and processes alike",
          "[cluster][control][nested]") {
  const std::vector<std::string> flags = GENERATE(std::vector<std::string>{"--scale-threads", "2"},
                                                  std::vector<std::string>{"--scale-processes", "2"});
  CAPTURE(flags);
  ControlCluster cluster;
  WorkerProcess worker(cluster.url, {.extra = flags});
  cluster.joined(worker);
  scale::Iterator<int> numbers(iota(4), cluster.manager);
  numbers.use_scope(cluster.memory);
  support::ProgressSeen seen(cluster.memory);
  scale::RunOptions options{.chunk_size = 1, .on_progress = [&](const scale::Progress& p) { seen(p); }};
  REQUIRE(numbers.map(support::half_until_seen, options).get() == iota(4));
  CHECK(seen.finish());
  const std::vector<scale::Progress>& reports = seen.reports;
  REQUIRE(reports.size() >= 2);
  CHECK(reports.back().fraction == 1.0);
  CHECK(reports.back().items_done == 4);
  for (std::size_t i = 0; i + 1 < reports.size(); ++i) CHECK(reports[i].fraction <= reports[i + 1].fraction);
}

#ifdef CONTROL_APP_BINARY
TEST_CASE("Ctrl-C to an application mid-map on a cluster: it reports Cancelled and exits, and Redis keeps no chunk",
          "[cluster][control][signals]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  // Workers of the application's own build: the application itself, started as a worker.
  WorkerProcess worker(url, {.executable = CONTROL_APP_BINARY, .extra = {"--scale-threads", "2"}});
  constexpr auto grace = 500ms;
  support::ControlApp app;
  support::start_control_app(app, CONTROL_APP_BINARY, {"cluster", std::to_string(grace.count()), url});
  std::string seen;
  auto keep = [&seen](const std::string& line) { seen += line + "\n"; };
  const bool running = app.line_with("running", 20s, keep).has_value();
  INFO("the application printed: " << seen);
  REQUIRE(running);
  // Chunks wait in the stream behind the two the worker runs.
  REQUIRE(eventually([&] { return stream_length(url) >= 3; }));
  const auto interrupted = Clock::now();
  REQUIRE(::kill(app.pid, SIGINT) == 0);
  const bool cancelled = app.line_with("cancelled", grace + 5s, keep).has_value();
  INFO("then: " << seen);
  CHECK(cancelled);
  const std::optional<int> status = app.wait_exit(grace + 5s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 3);
  CHECK(Clock::now() - interrupted < grace + 5s);
  // Nothing of the stopped map is left for a worker, queued or pending.
  CHECK(stream_length(url) == 0);
  CHECK(pending_count(url) == 0);
  // The worker goes on: still beating.
  CHECK(worker.wait_exit(0ms) == -1);
}
#endif

int main(int argc, char** argv) {
  // In a worker this serves and never returns. In the parent the Runtime goes away again: each
  // test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
