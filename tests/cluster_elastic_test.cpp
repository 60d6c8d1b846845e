// ClusterManager while its workers change: workers that join a running map, drain and order,
// nested managers on a worker (--scale-threads, --scale-processes) and their bad flags. Workers
// are this very test executable started with --scale-worker URL on a redis-server the test
// starts; main() builds the Runtime from argc/argv first, so in a worker it serves and never
// returns. Each test case uses its own namespace on the shared server and kills its workers by pid.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "redis/redis_client.hpp"

#include "sanitizers/deliberate_crash.hpp"
#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/worker_process.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;

using namespace support;

/// The live worker of `manager` with process id `pid`, once it is there.
std::optional<scale::ClusterWorker> worker_with_pid(const scale::ClusterManager& manager, pid_t pid) {
  for (auto& worker : manager.workers())
    if (worker.pid == pid) return worker;
  return std::nullopt;
}

std::optional<scale::ClusterWorker> wait_for_worker(const scale::ClusterManager& manager, pid_t pid) {
  std::optional<scale::ClusterWorker> found;
  eventually([&] { return (found = worker_with_pid(manager, pid)).has_value(); });
  return found;
}

/// A test's cluster of one worker of this build (with `extra` flags) on a namespace of its own,
/// and a manager that has seen it join.
struct OneWorker {
  explicit OneWorker(std::vector<std::string> extra = {}) : process(url, {.extra = std::move(extra)}) {
    worker = wait_for_worker(manager, process.pid());
    REQUIRE(worker);
  }
  scale::Runtime runtime;
  std::string url = fresh_url();
  WorkerProcess process;
  scale::ClusterManager manager{url, fast_options()};
  std::optional<scale::ClusterWorker> worker;
};

/// The most items that ran at the same time, from their [start, end) times.
std::size_t most_at_once(std::vector<std::pair<std::int64_t, std::int64_t>> spans) {
  std::size_t most = 0;
  for (auto& [start, end] : spans) {
    std::size_t at_once = 0;
    for (auto& [other_start, other_end] : spans)
      if (other_start <= start && start < other_end) ++at_once;
    most = std::max(most, at_once);
  }
  return most;
}

// ----- worker functions -----

/// (2x, the pid of the worker that ran it, when it started).
auto pid_after_30ms = [](int x) {
  const std::int64_t started = monotonic_us();
  std::this_thread::sleep_for(30ms);
  return std::tuple<int, int, std::int64_t>(2 * x, static_cast<int>(::getpid()), started);
};

/// Counts its runs in the scope, so a test sees that no item ran twice; (2x, the worker's pid).
auto counted_slow_twice = [](int x, scale::Scope& scope) {
  scope.increment("runs", 1).get();
  std::this_thread::sleep_for(100ms);
  return std::pair<int, int>(2 * x, static_cast<int>(::getpid()));
};

/// (start, end) of an item that sleeps 300 ms.
auto span_of_300ms = [](int) {
  const std::int64_t started = monotonic_us();
  std::this_thread::sleep_for(300ms);
  return std::pair<std::int64_t, std::int64_t>(started, monotonic_us());
};

/// A map inside the worker function, on a thread pool of its own.
auto sum_of_squares_below = [](int n) {
  scale::ThreadPoolManager pool(2);
  std::vector<int> below(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) below[static_cast<std::size_t>(i)] = i;
  scale::Iterator<int> inner(std::move(below), pool);
  std::vector<long> squares = inner.map([](int i) { return static_cast<long>(i) * i; }).get();
  long sum = 0;
  for (long s : squares) sum += s;
  return sum;
};

auto twice = [](int x) { return 2 * x; };

auto pid_of = [](int) { return static_cast<int>(::getpid()); };

auto abort_on_5 = [](int x) SCALE_TEST_DELIBERATE_CRASH {
  if (x == 5) std::abort();
  return 2 * x;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("a map started with no worker spreads over the workers that join while it runs", "[cluster][elastic]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  scale::ClusterManager manager(url, fast_options());
  CHECK(manager.concurrency() == 1);
  scale::Iterator<int> numbers(iota(150), manager);
  auto pending = numbers.map(pid_after_30ms);
  // Nothing runs until a worker comes.
  REQUIRE(eventually([&] { return manager.stats().tasks_queued >= 1; }));
  WorkerProcess a(url), b(url), c(url);
  const auto result = std::move(pending).get();
  REQUIRE(result.size() == 150);
  std::map<int, std::size_t> items_by_pid;
  for (std::size_t i = 0; i < result.size(); ++i) {
    REQUIRE(std::get<0>(result[i]) == static_cast<int>(2 * i));
    ++items_by_pid[std::get<1>(result[i])];
  }
  CHECK(items_by_pid.size() == 3);
  for (pid_t pid : {a.pid(), b.pid(), c.pid()}) CHECK(items_by_pid[pid] > 0);
  CHECK(manager.concurrency() == 3);
  CHECK(manager.stats().tasks_retried == 0);
}

TEST_CASE("a worker that joins mid-map gets its first chunk soon after its first heartbeat", "[cluster][elastic]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  const std::string tag = tag_of(url);
  WorkerProcess a(url);
  scale::ClusterManager manager(url, fast_options());
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  scale::Iterator<int> numbers(iota(200), manager);
  auto pending = numbers.map(pid_after_30ms);
  REQUIRE(eventually([&] { return manager.stats().tasks_done >= 3; }));
  WorkerProcess b(url);
  // Its first heartbeat, as Redis sees it: its field in the registry appears.
  scale::detail::RedisClient client(scale::detail::parse_redis_url(url.substr(0, url.find('?'))));
  std::int64_t first_beat = 0;
  REQUIRE(eventually(
      [&] {
        const auto fields = client.command({"HGETALL", tag + ":workers"}).get();
        for (std::size_t i = 1; i < fields.elements.size(); i += 2)
          if (fields.elements[i].str.find("\"pid\":" + std::to_string(b.pid())) != std::string::npos) {
            first_beat = monotonic_us();
            return true;
          }
        return false;
      },
      10s));
  const auto result = std::move(pending).get();
  std::int64_t first_item = 0;
  for (auto& [value, pid, started] : result)
    if (pid == b.pid() && (first_item == 0 || started < first_item)) first_item = started;
  REQUIRE(first_item != 0);
  // The benchmark measures the real figure (bench/cluster_elastic); here a generous bound.
  CHECK(first_item - first_beat < 1'000'000);
}

TEST_CASE("a drained busy worker finishes its chunk, leaves and exits 0, and nothing of it is lost or rerun",
          "[cluster][elastic]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess a(url), b(url);
  scale::ClusterManager manager(url, fast_options());
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 2; }));
  const auto target = wait_for_worker(manager, a.pid());
  REQUIRE(target);
  scale::SharedMemory memory(url);
  scale::Iterator<int> numbers(iota(40), manager);
  numbers.use_scope(memory);
  auto pending = numbers.map(counted_slow_twice, scale::RunOptions{.chunk_size = 2});
  // Both workers hold a chunk.
  REQUIRE(eventually([&] { return manager.stats().tasks_running == 2; }));
  manager.drain(target->id).get();
  CHECK(a.wait_exit(10s) == 0);
  const auto result = std::move(pending).get();
  REQUIRE(result.size() == 40);
  std::size_t on_drained = 0;
  for (std::size_t i = 0; i < result.size(); ++i) {
    REQUIRE(result[i].first == static_cast<int>(2 * i));
    if (result[i].second == target->pid) ++on_drained;
  }
  CHECK(on_drained >= 2);                               // the chunk it held when drained was delivered
  CHECK(memory.get<std::int64_t>("runs").get() == 40);  // every item ran once
  const scale::ManagerStats stats = manager.stats();
  CHECK(stats.workers_lost == 0);
  CHECK(stats.tasks_retried == 0);
  CHECK(stats.tasks_failed == 0);
  REQUIRE(eventually([&] { return !worker_with_pid(manager, a.pid()).has_value(); }));
  CHECK(manager.concurrency() == 1);
  // It deleted its keys on its way out.
  const std::string tag = tag_of(url);
  CHECK(redis(url, {"EXISTS", tag + ":heartbeat:" + target->id}).integer == 0);
  CHECK(redis(url, {"HEXISTS", tag + ":workers", target->id}).integer == 0);
}

TEST_CASE("order({.threads = 3}) runs three chunks at once on the worker, and the manager sees it",
          "[cluster][elastic]") {
  OneWorker one;
  CHECK(one.worker->concurrency == 1);
  CHECK(one.manager.concurrency() == 1);
  one.manager.order(one.worker->id, scale::WorkerOrder{.threads = 3}).get();
  REQUIRE(eventually([&] { return one.manager.concurrency() == 3; }));
  CHECK(worker_with_pid(one.manager, one.process.pid())->concurrency == 3);
  // Its heartbeat announces it.
  CHECK_THAT(redis(one.url, {"HGET", tag_of(one.url) + ":workers", one.worker->id}).str, Catch::Contains("\"concurrency\":3"));
  scale::Iterator<int> numbers(iota(6), one.manager);
  const auto spans = numbers.map(span_of_300ms, scale::RunOptions{.chunk_size = 1}).get();
  CHECK(most_at_once(spans) == 3);
  // What it provides is carried to its record.
  one.manager.order(one.worker->id, scale::WorkerOrder{.provides = std::map<std::string, std::string>{{"gpu", "2"}}}).get();
  REQUIRE(eventually([&] { return worker_with_pid(one.manager, one.process.pid())->provides.count("gpu") == 1; }));
  CHECK(worker_with_pid(one.manager, one.process.pid())->provides.at("gpu") == "2");
  CHECK(worker_with_pid(one.manager, one.process.pid())->concurrency == 3);
  // Another manager of this build may order it too; the first one sees the change.
  scale::ClusterManager other(one.url, fast_options());
  REQUIRE(wait_for_worker(other, one.process.pid()));
  other.order(one.worker->id, scale::WorkerOrder{.threads = 2}).get();
  REQUIRE(eventually([&] { return one.manager.concurrency() == 2; }));
  CHECK(worker_with_pid(one.manager, one.process.pid())->concurrency == 2);
}

TEST_CASE("drain and order of an unknown worker id fail with an Error naming it and the live workers",
          "[cluster][elastic][errors]") {
  OneWorker one;
  REQUIRE_THROWS_AS(one.manager.drain("no-such-worker").get(), scale::Error);
  REQUIRE_THROWS_WITH(one.manager.drain("no-such-worker").get(),
                      Catch::Contains("'no-such-worker'") && Catch::Contains(one.worker->id));
  REQUIRE_THROWS_WITH(one.manager.order("no-such-worker", {.threads = 2}).get(),
                      Catch::Contains("'no-such-worker'") && Catch::Contains(one.worker->id));
  REQUIRE_THROWS_WITH(one.manager.order(one.worker->id, {.threads = 0}).get(), Catch::Contains("at least 1"));
  // The worker was left as it was.
  CHECK(worker_with_pid(one.manager, one.process.pid())->concurrency == 1);
}

TEST_CASE("a --scale-threads 2 worker runs two chunks at once, and chunks that map on a thread pool of their own",
          "[cluster][elastic][nested]") {
  OneWorker one({"--scale-threads", "2"});
  CHECK(one.worker->concurrency == 2);
  CHECK(one.manager.concurrency() == 2);
  scale::Iterator<int> numbers(iota(4), one.manager);
  CHECK(most_at_once(numbers.map(span_of_300ms, scale::RunOptions{.chunk_size = 1}).get()) == 2);
  scale::Iterator<int> sizes({10, 100, 1000, 5}, one.manager);
  const auto sums = sizes.map(sum_of_squares_below, scale::RunOptions{.chunk_size = 1}).get();
  CHECK(sums == std::vector<long>{285, 328350, 332833500, 30});
}

TEST_CASE("a --scale-processes 2 worker: an item that kills its child ends in WorkerLost naming it, and the worker "
          "stays joined",
          "[cluster][elastic][nested]") {
  scale_test::CrashingChildren crashing;  // first: its environment reaches the worker and its children
  OneWorker one({"--scale-processes", "2"});
  CHECK(one.worker->concurrency == 2);
  scale::Iterator<int> numbers(iota(100), one.manager);
  // Results come back through the worker's children (the pids are theirs, not the worker's).
  const std::vector<int> pids = numbers.map(pid_of, scale::RunOptions{.chunk_size = 10}).get();
  std::set<int> ran_on(pids.begin(), pids.end());
  CHECK(ran_on.count(one.process.pid()) == 0);
  CHECK(ran_on.size() >= 1);
  REQUIRE(numbers.map(twice).get()[99] == 198);

  scale::Iterator<int> few(iota(10), one.manager);
  try {
    few.map(abort_on_5, scale::RunOptions{.chunk_size = 4}).get();
    FAIL("the map should have failed");
  } catch (const scale::WorkerLost& lost) {
    CHECK(lost.index() == 5);
    CHECK(lost.attempts() == 4);  // the first run and max_retries (3) more
    CHECK_THAT(lost.status(), Catch::Contains(one.worker->id));
  }
  // The worker itself lived through it: the same process, still joined, beating, and serving.
  CHECK(one.process.wait_exit(0ms) == -1);
  CHECK(few.map(twice).get() == std::vector<int>{0, 2, 4, 6, 8, 10, 12, 14, 16, 18});
  CHECK(worker_with_pid(one.manager, one.process.pid()).has_value());
  CHECK(redis(one.url, {"PTTL", tag_of(one.url) + ":heartbeat:" + one.worker->id}).integer > 0);
  CHECK(one.manager.stats().workers_lost == 0);
  CHECK(one.manager.stats().workers_alive == 1);

  // Ordered to 3, it runs three chunks at once, on a pool of three children.
  one.manager.order(one.worker->id, scale::WorkerOrder{.threads = 3}).get();
  REQUIRE(eventually([&] { return one.manager.concurrency() == 3; }));
  scale::Iterator<int> six(iota(6), one.manager);
  CHECK(most_at_once(six.map(span_of_300ms, scale::RunOptions{.chunk_size = 1}).get()) == 3);
}

TEST_CASE("a worker given --scale-threads 0, a non-number, or both nested flags exits 2 with a usage line",
          "[cluster][elastic][errors]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{"--scale-threads", "0"}, "--scale-threads takes a whole number"},
      {{"--scale-threads", "two"}, "--scale-threads takes a whole number"},
      {{"--scale-processes=-1"}, "--scale-processes takes a whole number"},
      {{"--scale-threads", "2", "--scale-processes", "2"}, "give one of them"},
  };
  int n = 0;
  for (const auto& [flags, problem] : cases) {
    const std::string log = "/tmp/scale-elastic-flags-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    WorkerProcess worker(url, {.extra = flags, .stderr_file = log});
    CHECK(worker.wait_exit(10s) == 2);
    const std::string text = read_file(log);
    ::unlink(log.c_str());
    CHECK_THAT(text, Catch::Contains(problem) && Catch::Contains("usage:") && Catch::Contains("--scale-processes N"));
    // It never joined.
    CHECK(redis(url, {"HLEN", tag_of(url) + ":workers"}).integer == 0);
  }
}

int main(int argc, char** argv) {
  // In a worker this serves and never returns. In the parent the Runtime goes away again: each
  // test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
