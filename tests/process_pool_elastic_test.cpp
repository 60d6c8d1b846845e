// ProcessPoolManager::resize and adapt while maps run, chunk sizes from measured time, and maps
// nested in a worker process. Workers are children of this very test executable: main() builds
// the Runtime from argc/argv first (in a worker it serves tasks and never returns), then every
// test case builds its own.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <dirent.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/processes.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;
using support::children_of;
using support::eventually;
using support::iota;
using support::process_gone;

/// What ran an item: the item and the pid of the process that ran it (raw bytes on the wire).
struct Ran {
  int item;
  int pid;
};

auto pid_after_5ms = [](int x) {
  std::this_thread::sleep_for(5ms);
  return Ran{x, static_cast<int>(::getpid())};
};

auto pid_after_10ms = [](int x) {
  std::this_thread::sleep_for(10ms);
  return Ran{x, static_cast<int>(::getpid())};
};

auto pid_after_i_mod_10_ms = [](int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(x % 10));
  return Ran{x, static_cast<int>(::getpid())};
};

/// Counts its runs of each item in the parent's memory; returns the count after this run.
auto count_runs_after_5ms = [](int x, scale::Scope& scope) -> scale::Future<std::int64_t> {
  std::this_thread::sleep_for(5ms);
  std::int64_t runs = co_await scope.increment("runs/" + std::to_string(x), 1);
  co_return runs;
};

auto twice = [](int x) { return 2 * x; };

struct BadItem : std::runtime_error {
  using std::runtime_error::runtime_error;
};

auto slow_then_throw_on_3 = [](int x) {
  if (x == 3) throw BadItem("three is bad");
  std::this_thread::sleep_for(10ms);
  return x;
};

/// In a worker: a map of its own on a thread pool; returns the sum of 2 * [0, n).
auto nested_thread_pool_sum = [](int n) {
  scale::ThreadPoolManager threads(2);
  scale::Iterator<int> items(iota(n), threads);
  std::vector<int> doubled = items.map(twice).get();
  return std::accumulate(doubled.begin(), doubled.end(), 0);
};

/// In a worker: a map on a process pool of its own (refused there).
auto nested_process_pool = [](int x) {
  scale::ProcessPoolManager inner({.max_workers = 2, .min_workers = 1});
  scale::Iterator<int> items(std::vector<int>{x}, inner);
  return items.map(twice).get()[0];
};

std::set<int> pids_of(const std::vector<Ran>& runs) {
  std::set<int> pids;
  for (const Ran& run : runs) pids.insert(run.pid);
  return pids;
}

void require_in_order(const std::vector<Ran>& runs, int n) {
  REQUIRE(runs.size() == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) REQUIRE(runs[static_cast<std::size_t>(i)].item == i);
}

}  // namespace

TEST_CASE("resize up while a map runs spreads its chunks over the new workers", "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 4});
  manager.resize(1);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  CHECK(manager.stats().workers_target == 1);
  CHECK(manager.concurrency() == 1);

  scale::Iterator<int> items(iota(400), manager);  // 2 s of work for one worker
  auto pending = items.map(pid_after_5ms);
  REQUIRE(eventually([&] { return manager.stats().tasks_running > 0; }));
  CHECK(manager.worker_pids().size() == 1);
  manager.resize(4);
  CHECK(manager.stats().workers_target == 4);
  CHECK(manager.concurrency() == 4);

  std::vector<Ran> runs = pending.get();
  require_in_order(runs, 400);
  CHECK(pids_of(runs).size() == 4);  // every new worker ran items of the call already running
  const auto stats = manager.stats();
  CHECK(stats.workers_spawned == 4);
  CHECK(stats.workers_alive == 4);
  CHECK(stats.tasks_retried == 0);
  CHECK(stats.tasks_failed == 0);
}

TEST_CASE("resize down while a map runs loses no item, runs none twice and retries nothing",
          "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 4});
  manager.resize(4);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 4; }));
  const std::vector<pid_t> all = manager.worker_pids();

  scale::SharedMemory memory;
  scale::Iterator<int> items(iota(300), manager);
  items.use_scope(memory);
  auto pending = items.map(count_runs_after_5ms);
  REQUIRE(eventually([&] { return manager.stats().tasks_done >= 4; }));  // every worker is busy
  manager.resize(1);
  CHECK(manager.stats().workers_target == 1);
  // Busy workers finish what they hold, then leave; all while the map still runs.
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  CHECK_FALSE(pending.ready());

  std::vector<std::int64_t> runs = pending.get();
  REQUIRE(runs.size() == 300);
  for (int i = 0; i < 300; ++i) {
    INFO("item " << i);
    REQUIRE(runs[static_cast<std::size_t>(i)] == 1);
    REQUIRE(memory.get<std::int64_t>("runs/" + std::to_string(i)).get() == 1);
  }
  const auto stats = manager.stats();
  CHECK(stats.tasks_retried == 0);
  CHECK(stats.workers_lost == 0);
  CHECK(stats.tasks_failed == 0);
  const std::vector<pid_t> kept = manager.worker_pids();
  REQUIRE(kept.size() == 1);
  for (pid_t pid : all)
    if (pid != kept.front()) CHECK(eventually([&] { return process_gone(pid); }));
}

TEST_CASE("a map on a pool resized to 0 fails at once with NoWorkers that says what to do", "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2, .min_workers = 1});
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  manager.resize(0);  // min_workers no longer applies: the fixed count does
  CHECK(manager.stats().workers_target == 0);
  CHECK(manager.concurrency() == 0);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 0; }));

  scale::Iterator<int> items(iota(10), manager);
  const auto started = std::chrono::steady_clock::now();
  REQUIRE_THROWS_AS(items.map(twice).get(), scale::NoWorkers);
  REQUIRE_THROWS_WITH(items.map(twice).get(),
                      Catch::Contains("resized to 0") && Catch::Contains("resize(n)") && Catch::Contains("adapt"));
  CHECK(std::chrono::steady_clock::now() - started < 1s);
  CHECK(manager.stats().workers_alive == 0);
  CHECK(manager.stats().workers_lost == 0);

  manager.resize(2);
  REQUIRE(items.map(twice).get()[9] == 18);
}

TEST_CASE("resize(0) while a map runs lets the running chunks finish and fails the rest with NoWorkers",
          "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  manager.resize(1);
  scale::Iterator<int> items(iota(200), manager);  // 2 s of work for one worker
  auto pending = items.map(pid_after_10ms);
  REQUIRE(eventually([&] { return manager.stats().tasks_running > 0; }));
  manager.resize(0);
  REQUIRE_THROWS_AS(pending.get(), scale::NoWorkers);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 0; }));
  CHECK(manager.stats().tasks_retried == 0);
  CHECK(manager.stats().workers_lost == 0);
}

TEST_CASE("adapt grows the pool under a backlog of slow items and shrinks it to min after the work",
          "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 4});  // not the hardware's count: the test wants 4
  manager.adapt({.min = 0, .max = 4, .scale_down_after = 300ms});
  CHECK(manager.stats().workers_target == 0);
  CHECK(manager.stats().workers_alive == 0);

  scale::Iterator<int> items(iota(200), manager);  // 2 s of work for one worker
  auto pending = items.map(pid_after_10ms);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 4; }));
  CHECK(manager.stats().workers_target == 4);
  const std::vector<pid_t> workers = manager.worker_pids();
  std::vector<Ran> runs = pending.get();
  require_in_order(runs, 200);
  CHECK(pids_of(runs).size() == 4);

  // Nothing to run: after the window the target is min (0) and every worker exits.
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 0; }));
  CHECK(manager.stats().workers_target == 0);
  for (pid_t pid : workers) CHECK(eventually([&] { return process_gone(pid); }));
  const auto stats = manager.stats();
  CHECK(stats.tasks_retried == 0);
  CHECK(stats.workers_lost == 0);
  CHECK(stats.workers_spawned == 4);

  // A new call grows it again.
  REQUIRE(items.map(pid_after_5ms).get()[199].item == 199);
  CHECK(manager.stats().workers_spawned > 4);
}

TEST_CASE("an adapting pool shrinks to min after a call that failed", "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 4});
  manager.adapt({.min = 1, .max = 4, .scale_down_after = 200ms});
  scale::Iterator<int> items(iota(400), manager);
  REQUIRE_THROWS_AS(items.map(slow_then_throw_on_3, {.chunk_size = 1}).get(), scale::RemoteError);
  CHECK(manager.stats().workers_spawned >= 2);  // the backlog of 400 items grew it
  // The failed call reports no more; the pool still finds its backlog gone.
  REQUIRE(eventually([&] { return manager.stats().workers_target == 1 && manager.stats().workers_alive == 1; }));
  CHECK(manager.stats().workers_lost == 0);
  CHECK(manager.stats().tasks_retried == 0);
}

TEST_CASE("max_workers caps resize and adapt, and resize after adapt keeps its count through idle time",
          "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2, .idle_timeout = 100ms});
  manager.resize(10);
  CHECK(manager.stats().workers_target == 2);
  CHECK(manager.concurrency() == 2);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 2; }));

  manager.adapt({.min = 1, .max = 10, .scale_down_after = 100ms});
  scale::Iterator<int> items(iota(100), manager);
  std::vector<Ran> runs = items.map(pid_after_5ms).get();
  require_in_order(runs, 100);
  CHECK(manager.stats().workers_target <= 2);
  // No backlog: down to min (1) after the window; idle_timeout does not apply below it.
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  CHECK(manager.stats().workers_target == 1);

  // A fixed count turns adapt off: two workers, kept idle far past idle_timeout and the window.
  manager.resize(2);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 2; }));
  const std::vector<pid_t> fixed = manager.worker_pids();
  std::this_thread::sleep_for(400ms);  // the idle time under test, not a wait for a state
  CHECK(manager.worker_pids() == fixed);
  CHECK(manager.stats().workers_target == 2);
  CHECK(manager.stats().workers_lost == 0);
  CHECK(manager.stats().tasks_retried == 0);
}

TEST_CASE("adapt refuses an invalid policy with std::invalid_argument naming the field", "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  REQUIRE_THROWS_AS(manager.adapt({.min = 3, .max = 2}), std::invalid_argument);
  REQUIRE_THROWS_WITH(manager.adapt({.min = 3, .max = 2}), Catch::Contains("min (3)"));
  REQUIRE_THROWS_WITH(manager.adapt({.max = 2, .backlog_per_worker = 0}), Catch::Contains("backlog_per_worker"));
  REQUIRE_THROWS_WITH(manager.adapt({.max = 2, .scale_down_after = 0ms}), Catch::Contains("scale_down_after"));
  REQUIRE_THROWS_WITH(manager.adapt({.max = 2, .scale_up_after = -1ms}), Catch::Contains("scale_up_after"));
  // The pool is as it was: workers on demand, concurrency max_workers.
  CHECK(manager.concurrency() == 2);
  scale::Iterator<int> items(iota(10), manager);
  REQUIRE(items.map(twice).get()[9] == 18);
  CHECK(manager.stats().workers_spawned >= 1);
}

TEST_CASE("a worker function runs a nested map on a ThreadPoolManager of its own", "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::Iterator<int> sizes({10, 100, 1000, 5000}, manager);
  std::vector<int> sums = sizes.map(nested_thread_pool_sum, {.chunk_size = 1}).get();
  REQUIRE(sums == std::vector<int>{90, 9900, 999000, 24995000});
  CHECK(manager.stats().workers_spawned >= 1);
  CHECK(manager.stats().tasks_failed == 0);
  CHECK(manager.stats().workers_lost == 0);
}

TEST_CASE("a map on a ProcessPoolManager made inside a worker fails at once with an Error saying what to use",
          "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1, .min_workers = 1});
  REQUIRE(eventually([&] { return manager.worker_pids().size() == 1; }));
  const pid_t worker = manager.worker_pids().front();
  scale::Iterator<int> items({1, 2}, manager);
  const auto started = std::chrono::steady_clock::now();
  try {
    items.map(nested_process_pool).get();
    FAIL("the nested map should have failed");
  } catch (const scale::RemoteError& error) {
    FAIL("expected the library's own scale::Error, got " << error.what());
  } catch (const scale::Error& error) {
    CHECK_THAT(std::string(error.what()),
               Catch::Contains("worker process of a ProcessPoolManager") && Catch::Contains("ThreadPoolManager"));
  }
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  CHECK(children_of(worker).empty());  // the worker spawned nothing, not even the inner min_workers
  CHECK(manager.stats().workers_lost == 0);
  REQUIRE(items.map(twice).get() == std::vector<int>{2, 4});  // the same worker serves on
  CHECK(manager.worker_pids() == std::vector<pid_t>{worker});
}

TEST_CASE("uneven items (item i sleeps i % 10 ms) finish in order over both workers in time-sized chunks",
          "[process_pool][elastic]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  CHECK(manager.concurrency() == 2);  // on demand: max_workers
  CHECK(manager.stats().workers_target == 0);
  scale::Iterator<int> items(iota(300), manager);  // 1.35 s of work
  auto pending = items.map(pid_after_i_mod_10_ms);
  REQUIRE(eventually([&] { return manager.stats().workers_target == 2; }));  // what the queue wants
  std::vector<Ran> runs = pending.get();
  require_in_order(runs, 300);
  CHECK(pids_of(runs).size() == 2);
  const auto stats = manager.stats();
  CHECK(stats.tasks_failed == 0);
  CHECK(stats.tasks_retried == 0);
  // Chunks of about 50 ms (about 11 items) and smaller ones at the end: neither one item per
  // chunk nor a few large ones.
  INFO("chunks: " << stats.tasks_done);
  CHECK(stats.tasks_done >= 12);
  CHECK(stats.tasks_done <= 120);
  REQUIRE(eventually([&] { return manager.stats().workers_target == 0; }));  // nothing queued or running
}

int main(int argc, char** argv) {
  // In a worker this serves tasks and never returns. In the parent the Runtime goes away again:
  // each test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
