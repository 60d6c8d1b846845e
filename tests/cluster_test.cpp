// ClusterManager: workers are this very test executable started with --scale-worker URL (and
// cluster_other_build, a program of another build), all on a redis-server the tests start. main()
// builds the Runtime from argc/argv first: in a worker it serves and never returns. Each test
// case uses its own namespace on the shared server and kills its workers by pid.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cluster/keys.hpp"
#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/marker_file.hpp"
#include "support/iota.hpp"
#include "support/worker_process.hpp"

/// The Iterator behaviour suite on a ClusterManager with two workers of this executable, started
/// once for the suite on the shared redis-server, and a fresh redis:// namespace for each scope.
struct ClusterFactory {
  static constexpr bool ships = true;
  static const std::string& url();
  static std::unique_ptr<scale::ScalabilityManager> make();
  static scale::SharedMemory memory() { return scale::SharedMemory(support::fresh_url()); }
  static scale::SharedEventEmitter events() { return scale::SharedEventEmitter(support::fresh_url()); }
};

#define SCALE_ITERATOR_FACTORIES ClusterFactory
#define SCALE_ITERATOR_TAGS "[iterator][cluster]"
#include "iterator_suite.hpp"
#include "affinity_suite.hpp"
#include "control_suite.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;

using namespace support;

auto twice = [](int x) { return 2 * x; };

auto slow_twice_and_pid = [](int x) {
  std::this_thread::sleep_for(5ms);
  return std::pair<int, int>(2 * x, static_cast<int>(::getpid()));
};

struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

auto throw_on_5 = [](int x) {
  if (x == 5) throw BadInput("five is not allowed");
  return x;
};

auto times_multiplier = [](int number, scale::Scope& scope) -> scale::Future<int> {
  int multiplier = co_await scope.get<int>("multiplier");
  co_return number* multiplier;
};

// Item 0: the first attempt records its pid and is slow (the test stops it with SIGSTOP until its
// heartbeat expires); the rerun is slower still, so the first attempt's late result comes back
// while the call still waits. Each attempt returns its own call count.
auto stalled_once = [](int x, scale::Scope& scope) -> int {
  if (x != 0) return 10 * x;
  const auto calls = scope.increment("calls", 1).get();
  if (calls == 1) {
    scope.set("stalled_pid", static_cast<int>(::getpid())).get();
    std::this_thread::sleep_for(1500ms);
  } else {
    std::this_thread::sleep_for(2000ms);
  }
  return static_cast<int>(calls);
};

// Twice the item's number, save that from item 200 on the worker whose pid the item names blocks
// (the test kills it while it holds those chunks, running and read ahead).
/// The file a victim worker makes once one of its threads blocks in twice_unless_on_victim.
std::filesystem::path victim_blocked_marker(int pid) { return support::marker_file("cluster-test-blocked", pid); }

auto twice_unless_on_victim = [](std::pair<int, int> item) {
  if (item.first >= 200 && item.second == static_cast<int>(::getpid())) {
    support::touch_marker(victim_blocked_marker(item.second));
    std::this_thread::sleep_for(60s);
  }
  return 2 * item.first;
};

// Quick, save items 200 to 205, which take 500 ms each.
auto twice_slow_from_200 = [](int x) {
  if (x >= 200 && x < 206) std::this_thread::sleep_for(500ms);
  return 2 * x;
};

auto sleep_then_twice = [](int x) {
  std::this_thread::sleep_for(600ms);
  return 2 * x;
};

auto sleep_past_two_ttls_then_twice = [](int x) {
  std::this_thread::sleep_for(2 * test_heartbeat_ttl + 200ms);
  return 2 * x;
};

auto two_megabytes = [](int x) { return std::string(2u << 20, static_cast<char>('a' + x)); };

auto length_of = [](const std::string& text) { return text.size(); };

auto sleep_2s = [](int x) {
  std::this_thread::sleep_for(2s);
  return x;
};

auto throws_key_not_found = [](int x) {
  if (x == 3) throw scale::KeyNotFound("item/3");
  return x;
};

auto reads_missing_key = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<int> value = scope.get<int>("missing");
  int found = co_await std::move(value);
  co_return found + x;
};

/// What the function itself sees when the memory refuses its increment.
auto increment_text_seen = [](int, scale::Scope& scope) -> scale::Future<std::string> {
  std::string seen = "nothing";
  try {
    scale::Future<std::int64_t> sum = scope.increment("text", 1);
    co_await std::move(sum);
  } catch (const scale::TypeMismatch& error) {
    seen = "TypeMismatch " + error.key();
  } catch (const std::exception& error) {
    seen = std::string("other ") + error.what();
  }
  co_return seen;
};

auto increments_text = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<std::int64_t> sum = scope.increment("text", 1);
  std::int64_t n = co_await std::move(sum);
  co_return x + static_cast<int>(n);
};

bool wait_for_workers(const scale::ClusterManager& manager, std::size_t n) {
  return eventually([&] { return manager.stats().workers_alive == n; });
}

/// A test's cluster: a runtime, a namespace of its own, `n` workers of this build that have
/// joined, and a manager.
struct TestCluster {
  explicit TestCluster(std::size_t n, scale::ClusterOptions options = fast_options()) {
    for (std::size_t i = 0; i < n; ++i) workers.push_back(std::make_unique<WorkerProcess>(url));
    manager.emplace(url, options);
    REQUIRE(eventually([&] { return manager->stats().workers_alive == n; }));
  }
  scale::Runtime runtime;
  std::string url = fresh_url();
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  std::optional<scale::ClusterManager> manager;
};

}  // namespace

const std::string& ClusterFactory::url() {
  static const std::string url = fresh_url();
  return url;
}

std::unique_ptr<scale::ScalabilityManager> ClusterFactory::make() {
  static WorkerProcess a(url()), b(url());
  auto manager = std::make_unique<scale::ClusterManager>(url(), fast_options());
  REQUIRE(eventually([&] { return manager->stats().workers_alive == 2; }));
  return manager;
}

TEST_CASE("a map over many items on two workers returns every result in order", "[cluster]") {
  TestCluster cluster(2);
  scale::ClusterManager& manager = *cluster.manager;
  scale::Iterator<int> numbers(iota(20'000), manager);
  std::vector<int> result = numbers.map(twice).get();
  REQUIRE(result.size() == 20'000);
  for (std::size_t i = 0; i < result.size(); ++i) REQUIRE(result[i] == static_cast<int>(2 * i));

  scale::RunOptions options{.chunk_size = 7};
  REQUIRE(numbers.map(twice, options).get() == result);
  const scale::ManagerStats stats = manager.stats();
  CHECK(stats.workers_alive == 2);
  CHECK(stats.workers_spawned == 2);
  CHECK(stats.tasks_failed == 0);
  CHECK(stats.tasks_done >= (20'000 + 6) / 7);
  CHECK(stats.tasks_running == 0);
  CHECK(stats.tasks_queued == 0);
  // The manager's result stream expires unless the manager renews it (so a killed one's goes away).
  auto results = redis(cluster.url, {"KEYS", tag_of(cluster.url) + ":results:*"});
  REQUIRE(results.elements.size() == 1);
  CHECK(redis(cluster.url, {"PTTL", results.elements[0].str}).integer > 0);
}

TEST_CASE("workers() lists each live worker with its host, pid and build, and forgets one that leaves", "[cluster]") {
  TestCluster cluster(2);
  scale::ClusterManager& manager = *cluster.manager;
  WorkerProcess &a = *cluster.workers[0], &b = *cluster.workers[1];
  std::vector<scale::ClusterWorker> workers = manager.workers();
  REQUIRE(workers.size() == 2);
  std::set<int> pids;
  for (auto& worker : workers) {
    CHECK(worker.compatible);
    CHECK(!worker.host.empty());
    CHECK(!worker.fingerprint.empty());
    CHECK(worker.id.find(std::to_string(worker.pid)) != std::string::npos);
    pids.insert(worker.pid);
  }
  CHECK(pids == std::set<int>{a.pid(), b.pid()});
  a.kill(SIGKILL);
  REQUIRE(wait_for_workers(manager, 1));
  REQUIRE(manager.workers().size() == 1);
  CHECK(manager.workers()[0].pid == b.pid());
  CHECK(manager.stats().workers_lost == 1);
}

TEST_CASE("a worker killed with kill -9 mid-map has its chunks rerun, and a worker that joins mid-map takes work",
          "[cluster]") {
  TestCluster cluster(2);
  scale::ClusterManager& manager = *cluster.manager;
  WorkerProcess& a = *cluster.workers[0];
  const std::string& url = cluster.url;
  scale::Iterator<int> numbers(iota(600), manager);
  scale::RunOptions options{.chunk_size = 10};
  auto pending = numbers.map(slow_twice_and_pid, options);
  REQUIRE(eventually([&] { return manager.stats().tasks_done >= 6; }));
  a.kill(SIGKILL);
  WorkerProcess c(url);
  std::vector<std::pair<int, int>> result = std::move(pending).get();
  REQUIRE(result.size() == 600);
  std::set<int> pids;
  for (std::size_t i = 0; i < result.size(); ++i) {
    REQUIRE(result[i].first == static_cast<int>(2 * i));
    pids.insert(result[i].second);
  }
  CHECK(pids.count(c.pid()) == 1);  // the newcomer took chunks
  const scale::ManagerStats stats = manager.stats();
  CHECK(stats.tasks_retried > 0);
  CHECK(stats.workers_lost == 1);
  CHECK(stats.tasks_failed == 0);
}

TEST_CASE("a worker killed with kill -9 while it holds chunks read ahead has them rerun, each result accepted once",
          "[cluster]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerOptions two_threads;
  two_threads.extra = {"--scale-threads", "2"};
  WorkerProcess victim(url, two_threads), other(url);
  scale::ClusterManager manager(url, fast_options());
  REQUIRE(wait_for_workers(manager, 2));
  std::string victim_id;
  for (const auto& worker : manager.workers())
    if (worker.pid == victim.pid()) victim_id = worker.id;
  REQUIRE(!victim_id.empty());
  constexpr int count = 2000;
  std::vector<std::pair<int, int>> items;
  for (int i = 0; i < count; ++i) items.emplace_back(i, victim.pid());
  scale::Iterator<std::pair<int, int>> numbers(items, manager);
  scale::RunOptions options{.chunk_size = 1};
  auto pending = numbers.map(twice_unless_on_victim, options);
  // The task entries the victim holds: its pending entries in the group, over the task streams.
  auto held_by_victim = [&] {
    std::int64_t held = 0;
    for (const auto& stream : redis(url, {"KEYS", tag_of(url) + ":tasks:*"}).elements) {
      const auto summary = redis(url, {"XPENDING", stream.str, scale::detail::cluster_group});
      if (summary.elements.size() < 4) continue;
      for (const auto& consumer : summary.elements[3].elements)
        if (consumer.elements.size() == 2 && consumer.elements[0].str == victim_id)
          held += std::stoll(consumer.elements[1].str);
    }
    return held;
  };
  // Chunks were short, so it read ahead: it holds more than it runs. Then its threads block, so
  // the kill finds it holding at least the chunk a blocked thread runs (the ones it held before
  // may all be done by then in a slow build, and a victim holding nothing reruns nothing).
  const std::filesystem::path blocked = victim_blocked_marker(victim.pid());
  REQUIRE(eventually([&] { return held_by_victim() > 2; }));
  REQUIRE(eventually([&] { return support::marker_exists(blocked); }));
  victim.kill(SIGKILL);
  support::remove_marker(blocked);
  std::vector<int> result = std::move(pending).get();
  REQUIRE(result.size() == count);
  bool right = true;
  for (int i = 0; i < count; ++i) right = right && result[i] == 2 * i;
  CHECK(right);
  const scale::ManagerStats stats = manager.stats();
  CHECK(stats.tasks_done == count);  // one accepted result per chunk of one item
  // At least the chunks its blocked threads ran. The ones read ahead are rerun too, unless their
  // wait outlived short chunks before the kill and the worker gave them back already (a slow
  // build gets there first; that path has its own test below).
  CHECK(stats.tasks_retried >= 1);
  CHECK(stats.tasks_failed == 0);
  CHECK(stats.workers_lost == 1);
}

TEST_CASE("a reclaimed attempt's late result is discarded: each item's result is accepted once", "[cluster]") {
  TestCluster cluster(2);
  scale::ClusterManager& manager = *cluster.manager;
  WorkerProcess &a = *cluster.workers[0], &b = *cluster.workers[1];
  const std::string& url = cluster.url;
  scale::SharedMemory memory(url);
  scale::Iterator<int> numbers(iota(4), manager);
  numbers.use_scope(memory);
  scale::RunOptions options{.chunk_size = 1};
  auto pending = numbers.map(stalled_once, options);
  REQUIRE(eventually([&] { return memory.entry("stalled_pid").get().has_value(); }));
  const int stalled = memory.get<int>("stalled_pid").get();
  WorkerProcess& stalled_worker = stalled == a.pid() ? a : b;
  stalled_worker.kill(SIGSTOP);
  // Its heartbeat expires, and the chunk runs again on the other worker.
  REQUIRE(eventually([&] { return memory.get<int>("calls").get() == 2; }));
  stalled_worker.kill(SIGCONT);
  std::vector<int> result = std::move(pending).get();
  // The first attempt returned 1 after it was reclaimed; only the rerun's 2 counts.
  CHECK(result == std::vector<int>{2, 10, 20, 30});
  const scale::ManagerStats stats = manager.stats();
  CHECK(stats.tasks_done == 4);
  CHECK(stats.tasks_retried == 1);
  CHECK(stats.tasks_failed == 0);
  // The resumed worker rejoins and serves again.
  REQUIRE(wait_for_workers(manager, 2));
  REQUIRE(numbers.map(twice).get() == std::vector<int>{0, 2, 4, 6});
}

TEST_CASE("a long chunk on a live worker is never taken from it", "[cluster]") {
  TestCluster cluster(1);
  scale::ClusterManager& manager = *cluster.manager;
  scale::Iterator<int> numbers(iota(2), manager);
  scale::RunOptions options{.chunk_size = 1};
  // Each item takes over twice the heartbeat TTL: heartbeats keep the worker alive meanwhile.
  REQUIRE(numbers.map(sleep_past_two_ttls_then_twice, options).get() == std::vector<int>{0, 2});
  CHECK(manager.stats().tasks_retried == 0);
  CHECK(manager.stats().workers_lost == 0);
}

TEST_CASE("an exception thrown by the function arrives as scale::RemoteError", "[cluster]") {
  TestCluster cluster(1);
  scale::ClusterManager& manager = *cluster.manager;
  scale::Iterator<int> numbers(iota(10), manager);
  try {
    numbers.map(throw_on_5).get();
    FAIL("the map should have failed");
  } catch (const scale::RemoteError& error) {
    CHECK(error.type_name().find("BadInput") != std::string::npos);
    CHECK(error.message() == "five is not allowed");
  }
  CHECK(manager.stats().tasks_failed >= 1);
}

TEST_CASE("the canonical program's map runs on cluster workers with a redis:// scope", "[cluster]") {
  TestCluster cluster(2);
  scale::ClusterManager& manager = *cluster.manager;
  const std::string& url = cluster.url;
  scale::SharedMemory memory(url);
  scale::SharedEventEmitter events(url);
  scale::Iterator<int> numbers({1, 2, 3, 4, 5}, manager);
  numbers.use_scope(memory, events);
  memory.set("multiplier", 10).get();
  scale::RunOptions options{.chunk_size = 2};
  REQUIRE(numbers.map(times_multiplier, options).get() == std::vector<int>{10, 20, 30, 40, 50});
}

TEST_CASE("an in-process SharedMemory or SharedEventEmitter in the scope fails at once, saying to use a URL",
          "[cluster]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  scale::ClusterManager manager(url, fast_options());
  scale::Iterator<int> numbers(iota(10), manager);
  scale::SharedMemory local;
  numbers.use_scope(local);
  const auto started = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(numbers.map(times_multiplier).get(), Catch::Contains("in-process SharedMemory") &&
                                                               Catch::Contains("redis://") &&
                                                               Catch::Contains("http://"));
  scale::SharedMemory remote(url);
  scale::SharedEventEmitter local_events;
  numbers.use_scope(remote, local_events);
  REQUIRE_THROWS_WITH(numbers.map(times_multiplier).get(), Catch::Contains("in-process SharedEventEmitter"));
  CHECK(std::chrono::steady_clock::now() - started < 2s);  // at once, not after wait_for_workers
}

TEST_CASE("with no worker a map fails after wait_for_workers, saying to start workers with --scale-worker",
          "[cluster]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  scale::ClusterOptions options = fast_options();
  options.wait_for_workers = 500ms;
  scale::ClusterManager manager(url, options);
  scale::Iterator<int> numbers(iota(10), manager);
  const auto started = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(numbers.map(twice).get(),
                      Catch::Contains("--scale-worker " + url) && Catch::Contains("wait_for_workers"));
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited >= 500ms);
  CHECK(waited < 5s);
  CHECK(manager.stats().workers_alive == 0);
  // Nothing of the failed call is left for a worker that comes later.
  for (auto& key : redis(url, {"KEYS", tag_of(url) + ":tasks:*"}).elements)
    CHECK(redis(url, {"XLEN", key.str}).integer == 0);
}

TEST_CASE("a worker of another build is never given tasks, is reported incompatible, and alone it fails the map",
          "[cluster]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess other(url, {.executable = CLUSTER_OTHER_BUILD});
  scale::ClusterOptions options = fast_options();
  options.wait_for_workers = 1500ms;
  scale::ClusterManager manager(url, options);
  REQUIRE(eventually([&] { return manager.stats().workers_refused == 1; }));
  std::vector<scale::ClusterWorker> workers = manager.workers();
  REQUIRE(workers.size() == 1);
  CHECK_FALSE(workers[0].compatible);
  CHECK(workers[0].pid == other.pid());
  CHECK(manager.stats().workers_alive == 0);

  scale::Iterator<int> numbers(iota(10), manager);
  REQUIRE_THROWS_WITH(numbers.map(twice).get(),
                      Catch::Contains("--scale-worker") && Catch::Contains("different build"));

  // With a worker of this build too, the map runs, and only on it.
  WorkerProcess same(url);
  REQUIRE(wait_for_workers(manager, 1));
  auto pids = numbers.map(slow_twice_and_pid, scale::RunOptions{.chunk_size = 1}).get();
  for (auto& [value, pid] : pids) CHECK(pid == same.pid());
  CHECK(manager.stats().workers_refused == 1);
  CHECK(manager.workers().size() == 2);
}

TEST_CASE("a worker ends with status 0 on SIGTERM after finishing the chunk it runs", "[cluster]") {
  TestCluster cluster(1);
  scale::ClusterManager& manager = *cluster.manager;
  WorkerProcess& a = *cluster.workers[0];
  scale::Iterator<int> numbers(iota(1), manager);
  auto pending = numbers.map(sleep_then_twice);
  REQUIRE(eventually([&] { return manager.stats().tasks_running == 1; }));
  a.kill(SIGTERM);
  REQUIRE(std::move(pending).get() == std::vector<int>{0});
  CHECK(a.wait_exit(5s) == 0);
  // It left the registry on its way out: no reclaim, no loss.
  REQUIRE(wait_for_workers(manager, 0));
  CHECK(manager.stats().workers_lost == 0);
  CHECK(manager.stats().tasks_retried == 0);
}

TEST_CASE("chunks read ahead behind one that runs long go back to the queue, and their wait is no timeout",
          "[cluster]") {
  TestCluster cluster(1);
  scale::ClusterManager& manager = *cluster.manager;
  scale::Iterator<int> numbers(iota(400), manager);
  // The quick items make chunks short, so the worker reads ahead; items 200 to 205 then come
  // together. Each runs within the timeout, but one waiting behind two of them would not.
  scale::RunOptions options{.chunk_size = 1, .timeout = 900ms};
  std::vector<int> result = numbers.map(twice_slow_from_200, options).get();
  REQUIRE(result.size() == 400);
  bool right = true;
  for (int i = 0; i < 400; ++i) right = right && result[i] == 2 * i;
  CHECK(right);
  const scale::ManagerStats stats = manager.stats();
  CHECK(stats.tasks_retried == 0);
  CHECK(stats.tasks_failed == 0);
  CHECK(stats.tasks_done == 400);
}

TEST_CASE("a chunk that runs past RunOptions::timeout is run again, then fails with scale::WorkerLost", "[cluster]") {
  TestCluster cluster(2);
  scale::ClusterManager& manager = *cluster.manager;
  scale::Iterator<int> numbers(iota(1), manager);
  scale::RunOptions options{.max_retries = 1, .timeout = 300ms};
  try {
    numbers.map(sleep_2s, options).get();
    FAIL("the map should have failed");
  } catch (const scale::WorkerLost& error) {
    CHECK(error.index() == 0);
    CHECK(error.attempts() == 2);
    CHECK(error.status().find("timed out after 300 ms") != std::string::npos);
  }
}

TEST_CASE("destroying the manager fails its outstanding chunks with scale::Stopped and removes its keys", "[cluster]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  const std::string tag = tag_of(url);
  auto manager = std::make_unique<scale::ClusterManager>(url, fast_options());
  scale::Iterator<int> numbers(iota(10), *manager);
  auto pending = numbers.map(twice);
  REQUIRE(eventually([&] { return redis(url, {"HLEN", tag + ":managers"}).integer == 1; }));
  // The call has handed its chunks to the manager (a manager must outlive the calls that use it).
  REQUIRE(eventually([&] { return manager->stats().tasks_queued >= 1; }));
  manager.reset();
  REQUIRE_THROWS_AS(std::move(pending).get(), scale::Stopped);
  CHECK(redis(url, {"HLEN", tag + ":managers"}).integer == 0);
  CHECK(redis(url, {"KEYS", tag + ":results:*"}).elements.empty());
  // The queued chunks were taken out of the stream again.
  for (auto& key : redis(url, {"KEYS", tag + ":tasks:*"}).elements) CHECK(redis(url, {"XLEN", key.str}).integer == 0);
}

TEST_CASE("a Redis restarted without its data mid-map: the chunks are queued again and the map completes",
          "[cluster]") {
  scale::Runtime runtime;
  support::RedisServer server;
  const std::string url = server.url();
  WorkerProcess a(url), b(url);
  scale::ClusterManager manager(url, fast_options());
  REQUIRE(wait_for_workers(manager, 2));
  scale::Iterator<int> numbers(iota(300), manager);
  scale::RunOptions options{.chunk_size = 5};
  auto pending = numbers.map(slow_twice_and_pid, options);
  REQUIRE(eventually([&] { return manager.stats().tasks_done >= 4; }));
  server.stop();
  server.start();
  std::vector<std::pair<int, int>> result = std::move(pending).get();
  REQUIRE(result.size() == 300);
  for (std::size_t i = 0; i < result.size(); ++i) REQUIRE(result[i].first == static_cast<int>(2 * i));
  CHECK(manager.stats().tasks_failed == 0);
}

TEST_CASE("a chunk or a result too large for Redis fails the call with Redis's error instead of hanging", "[cluster]") {
  scale::Runtime runtime;
  support::RedisServer server(0, {"--proto-max-bulk-len", "1mb"});
  const std::string url = server.url();
  WorkerProcess a(url);
  scale::ClusterManager manager(url, fast_options());
  REQUIRE(wait_for_workers(manager, 1));
  scale::Iterator<int> numbers(iota(1), manager);
  REQUIRE_THROWS_WITH(numbers.map(two_megabytes).get(),
                      Catch::Contains("Redis refused this chunk's result") && Catch::Contains("chunk_size"));
  scale::Iterator<std::string> texts(std::vector<std::string>{std::string(2u << 20, 'x')}, manager);
  REQUIRE_THROWS_WITH(texts.map(length_of).get(),
                      Catch::Contains("proto-max-bulk-len") && Catch::Contains("chunk_size"));
  // The worker still serves.
  REQUIRE(numbers.map(twice).get() == std::vector<int>{0});
}

TEST_CASE("a --scale-worker without a URL and a bad --scale-heartbeat-ms are clear errors", "[cluster]") {
  std::string program = "cluster_test", worker = "--scale-worker", heartbeat = "--scale-heartbeat-ms", bad = "abc";
  {
    char* argv[] = {program.data(), worker.data(), nullptr};
    int argc = 2;
    REQUIRE_THROWS_WITH(scale::Runtime(argc, argv), Catch::Contains("--scale-worker needs a URL"));
  }
  {
    char* argv[] = {program.data(), heartbeat.data(), bad.data(), nullptr};
    int argc = 3;
    REQUIRE_THROWS_WITH(scale::Runtime(argc, argv), Catch::Contains("--scale-heartbeat-ms takes milliseconds"));
  }
}

TEST_CASE("a bad URL, an unknown URL option and bad heartbeat options are clear errors", "[cluster]") {
  scale::Runtime runtime;
  REQUIRE_THROWS_WITH(scale::ClusterManager("http://127.0.0.1:6379"), Catch::Contains("redis://"));
  REQUIRE_THROWS_WITH(scale::ClusterManager("redis://127.0.0.1:6379?colour=blue"),
                      Catch::Contains("unknown URL option 'colour'"));
  REQUIRE_THROWS_WITH(scale::ClusterManager("redis://127.0.0.1:6379", {.heartbeat_ttl = 0ms}),
                      Catch::Contains("heartbeat_ttl"));
}

TEST_CASE("a scale::Error subtype raised on a cluster worker reaches the caller as its own type", "[cluster][errors]") {
  TestCluster cluster(1);
  scale::ClusterManager& manager = *cluster.manager;
  scale::SharedMemory memory(cluster.url);
  memory.set("text", std::string("not a number")).get();
  scale::Iterator<int> numbers(iota(6), manager);
  numbers.use_scope(memory);
  // Thrown by the user's function.
  try {
    numbers.map(throws_key_not_found).get();
    FAIL("the map should have failed");
  } catch (const scale::KeyNotFound& error) {
    CHECK(error.key() == "item/3");
  }
  // Raised by the library: the worker's own get, and the memory's answer to its increment.
  try {
    numbers.map(reads_missing_key).get();
    FAIL("the map should have failed");
  } catch (const scale::KeyNotFound& error) {
    CHECK(error.key() == "missing");
  }
  try {
    numbers.map(increments_text).get();
    FAIL("the map should have failed");
  } catch (const scale::TypeMismatch& error) {
    CHECK(error.key() == "text");
    CHECK(error.stored() == "a string");
  }
  for (const auto& seen : numbers.map(increment_text_seen).get()) CHECK(seen == "TypeMismatch text");
}

TEST_CASE("a capturing lambda on a cluster fails at once with NotShippable", "[cluster][errors]") {
  scale::Runtime runtime;
  scale::ClusterManager manager(fresh_url(), fast_options());
  scale::Iterator<int> numbers(iota(10), manager);
  int offset = 3;
  auto captures = [offset](int x) { return x + offset; };
  const auto started = std::chrono::steady_clock::now();
  REQUIRE_THROWS_AS(numbers.map(captures).get(), scale::NotShippable);
  REQUIRE_THROWS_WITH(numbers.map(captures).get(), Catch::Contains("capture nothing"));
  CHECK(std::chrono::steady_clock::now() - started < 2s);  // at once, not after wait_for_workers
}

TEST_CASE("with no worker a map fails with NoWorkers after wait_for_workers", "[cluster][errors]") {
  scale::Runtime runtime;
  scale::ClusterOptions options = fast_options();
  options.wait_for_workers = 300ms;
  scale::ClusterManager manager(fresh_url(), options);
  scale::Iterator<int> numbers(iota(10), manager);
  REQUIRE_THROWS_AS(numbers.map(twice).get(), scale::NoWorkers);
}

TEST_CASE("with only workers of another build a map fails with BuildMismatch", "[cluster][errors]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess other(url, {.executable = CLUSTER_OTHER_BUILD});
  scale::ClusterOptions options = fast_options();
  options.wait_for_workers = 500ms;
  scale::ClusterManager manager(url, options);
  REQUIRE(eventually([&] { return manager.stats().workers_refused == 1; }));
  scale::Iterator<int> numbers(iota(10), manager);
  try {
    numbers.map(twice).get();
    FAIL("the map should have failed");
  } catch (const scale::BuildMismatch& error) {
    CHECK_THAT(std::string(error.what()), Catch::Contains("different build") && Catch::Contains("--scale-worker"));
  }
}

int main(int argc, char** argv) {
  // In a worker this serves and never returns. In the parent the Runtime goes away again: each
  // test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
