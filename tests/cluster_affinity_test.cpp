// Worker identity on the ClusterManager with real worker processes (this very executable started
// with --scale-worker URL) on a redis-server the tests start: keyed calls stay on one worker across
// calls and only a lost worker's keys move; broadcast answers once per live worker; a setup
// (on_every_worker) runs on a worker that joins late before its first chunk, and one that throws
// on every worker fails the call with its message. main() builds the Runtime from argc/argv
// first: in a worker it serves and never returns. Each test case has its own namespace and kills
// its workers by pid.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/worker_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace support;

constexpr auto plus_one = [](int x) { return x + 1; };
constexpr auto key_of = [](const int& x) { return "key-" + std::to_string(x % 30); };
constexpr auto pid_of = [](int) { return static_cast<int>(::getpid()); };

/// What the last setup of this worker process read from its scope.
std::string process_mark(const std::string* set = nullptr) {
  static std::mutex mutex;
  static std::string mark;
  std::lock_guard lock(mutex);
  if (set != nullptr) mark = *set;
  return mark;
}

constexpr auto mark_setup = [](scale::Scope& scope) -> scale::Future<void> {
  std::string token = co_await scope.get<std::string>("token");
  process_mark(&token);
};
constexpr auto mark_seen = [](int) { return process_mark(); };

constexpr auto failing_setup = [](scale::Scope&) { throw std::runtime_error("the model file is missing"); };

/// A test's cluster: a runtime, a namespace of its own, `n` workers of this build that have
/// joined, and a manager.
struct TestCluster {
  explicit TestCluster(std::size_t n, scale::ClusterOptions options = fast_options()) {
    for (std::size_t i = 0; i < n; ++i) workers.push_back(std::make_unique<WorkerProcess>(url));
    manager.emplace(url, options);
    REQUIRE(eventually([&] { return manager->stats().workers_alive == n; }));
  }
  /// The id of the worker with `pid`, as the manager lists it.
  std::string id_of(pid_t pid) const {
    for (const auto& worker : manager->workers())
      if (worker.pid == pid) return worker.id;
    return {};
  }
  scale::Runtime runtime;
  std::string url = fresh_url();
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  std::optional<scale::ClusterManager> manager;
};

/// Which worker each key's items ran on; fails the test when a key's items ran on two.
std::map<std::string, std::string> worker_by_key(const std::vector<scale::WorkerResult<int>>& results) {
  std::map<std::string, std::string> out;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const std::string key = key_of(static_cast<int>(i));
    auto [at, fresh] = out.emplace(key, results[i].worker);
    INFO("item " << i << " of " << key);
    REQUIRE(at->second == results[i].worker);
  }
  return out;
}

}  // namespace

TEST_CASE("a keyed call's keys stay on one cluster worker each, across calls", "[cluster][affinity]") {
  TestCluster cluster(3);
  scale::Iterator<int> numbers(iota(600), *cluster.manager);
  auto keyed = numbers.keyed_by(key_of);
  scale::RunOptions options{.chunk_size = 4};
  auto first = keyed.map_with_workers(plus_one, options).get();
  REQUIRE(first.size() == 600);
  for (std::size_t i = 0; i < first.size(); ++i) REQUIRE(first[i].value == static_cast<int>(i) + 1);
  const auto before = worker_by_key(first);
  // The results name the cluster's workers, and the keys spread over more than one of them.
  std::set<std::string> ids;
  for (const auto& worker : cluster.manager->workers()) ids.insert(worker.id);
  std::set<std::string> used;
  for (const auto& [key, worker] : before) {
    CHECK(ids.count(worker) == 1);
    used.insert(worker);
  }
  CHECK(used.size() >= 2);
  for (int call = 0; call < 3; ++call) CHECK(worker_by_key(keyed.map_with_workers(plus_one, options).get()) == before);
  CHECK(cluster.manager->stats().tasks_failed == 0);
}

TEST_CASE("a cluster worker killed by its pid moves only its own keys", "[cluster][affinity]") {
  TestCluster cluster(3);
  scale::Iterator<int> numbers(iota(300), *cluster.manager);
  auto keyed = numbers.keyed_by(key_of);
  scale::RunOptions options{.chunk_size = 2};
  const auto before = worker_by_key(keyed.map_with_workers(plus_one, options).get());
  // The victim: the worker of key-0.
  WorkerProcess* victim = nullptr;
  for (auto& worker : cluster.workers)
    if (cluster.id_of(worker->pid()) == before.at("key-0")) victim = worker.get();
  REQUIRE(victim != nullptr);
  const std::string gone = before.at("key-0");
  victim->kill(SIGKILL);
  REQUIRE(eventually([&] { return cluster.manager->stats().workers_alive == 2; }));
  const auto after = worker_by_key(keyed.map_with_workers(plus_one, options).get());
  std::size_t moved = 0;
  for (const auto& [key, worker] : before) {
    INFO(key << " was on " << worker << ", now on " << after.at(key));
    if (worker == gone) {
      CHECK(after.at(key) != gone);
      ++moved;
    } else {
      CHECK(after.at(key) == worker);
    }
  }
  CHECK(moved >= 1);
  CHECK(moved < before.size());
}

TEST_CASE("a keyed call whose worker dies while its chunks queue on it finishes on the others",
          "[cluster][affinity]") {
  TestCluster cluster(2);
  constexpr auto slow = [](int x) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return x + 1;
  };
  scale::Iterator<int> numbers(iota(400), *cluster.manager);
  auto keyed = numbers.keyed_by(key_of);
  scale::RunOptions options{.chunk_size = 2};
  auto running = keyed.map_with_workers(slow, options);
  // Once some items have run, one worker dies with chunks on its stream and in its hands.
  REQUIRE(eventually([&] { return cluster.manager->stats().tasks_done >= 10; }));
  cluster.workers[0]->kill(SIGKILL);
  auto results = std::move(running).get();
  REQUIRE(results.size() == 400);
  for (std::size_t i = 0; i < results.size(); ++i) REQUIRE(results[i].value == static_cast<int>(i) + 1);
  CHECK(cluster.manager->stats().workers_lost == 1);
}

TEST_CASE("broadcast on the cluster answers once per live worker, from that worker", "[cluster][affinity]") {
  TestCluster cluster(3);
  auto replies = cluster.manager->broadcast(pid_of, 0).get();
  REQUIRE(replies.size() == 3);
  std::set<int> pids;
  for (const auto& reply : replies) {
    REQUIRE_FALSE(reply.error);
    REQUIRE(reply.value);
    CHECK(cluster.id_of(*reply.value) == reply.worker);  // the reply came from the worker it names
    pids.insert(*reply.value);
  }
  std::set<int> started;
  for (const auto& worker : cluster.workers) started.insert(worker->pid());
  CHECK(pids == started);

  cluster.workers[1]->kill(SIGKILL);
  REQUIRE(eventually([&] { return cluster.manager->stats().workers_alive == 2; }));
  auto fewer = cluster.manager->broadcast(pid_of, 0).get();
  CHECK(fewer.size() == 2);
  for (const auto& reply : fewer) CHECK_FALSE(reply.error);
}

TEST_CASE("a chunk pinned to a worker that is not there fails with NoWorkers naming it", "[cluster][affinity]") {
  TestCluster cluster(1);
  auto item = std::make_shared<const std::vector<int>>(1, 0);
  auto job = std::make_shared<scale::detail::MapJob<int, std::remove_const_t<decltype(plus_one)>>>(item, plus_one, nullptr, nullptr,
                                                                             scale::detail::TaskPolicy{});
  scale::detail::Chunk chunk{job, 0, 1, {}, "no-such-worker"};
  const auto started = std::chrono::steady_clock::now();
  try {
    cluster.manager->submit(std::move(chunk)).get();
    FAIL("a chunk pinned to an unknown worker ran");
  } catch (const scale::NoWorkers& error) {
    CHECK_THAT(error.what(), Catch::Contains("no-such-worker"));
  }
  CHECK(std::chrono::steady_clock::now() - started < 2s);  // at once, not after wait_for_workers
}

TEST_CASE("a worker that joins after on_every_worker runs the setup before its first chunk", "[cluster][affinity]") {
  TestCluster cluster(1);
  scale::SharedMemory memory(fresh_url());
  const std::string token = "late-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  memory.set("token", token).get();
  cluster.manager->on_every_worker(mark_setup, &memory);
  scale::Iterator<int> numbers(iota(100), *cluster.manager);
  scale::RunOptions options{.chunk_size = 5};
  for (const auto& mark : numbers.map(mark_seen, options).get()) REQUIRE(mark == token);

  cluster.workers.push_back(std::make_unique<WorkerProcess>(cluster.url));
  REQUIRE(eventually([&] { return cluster.manager->stats().workers_alive == 2; }));
  const std::string late = cluster.id_of(cluster.workers.back()->pid());
  REQUIRE_FALSE(late.empty());
  // Keyed, so some keys land on the late worker; every item, there too, sees the setup's mark.
  auto results = numbers.keyed_by(key_of).map_with_workers(mark_seen, options).get();
  bool on_late = false;
  for (const auto& result : results) {
    REQUIRE(result.value == token);
    on_late = on_late || result.worker == late;
  }
  CHECK(on_late);
  auto replies = cluster.manager->broadcast(mark_seen, 0).get();
  REQUIRE(replies.size() == 2);
  for (const auto& reply : replies) CHECK(reply.value == token);
  CHECK(cluster.manager->stats().setups_failed == 0);
}

TEST_CASE("a setup that throws on every cluster worker fails the call with its message at once",
          "[cluster][affinity][errors]") {
  scale::ClusterOptions options = fast_options();
  options.wait_for_workers = 60s;  // the call must not wait for this
  TestCluster cluster(2, options);
  cluster.manager->on_every_worker(failing_setup);
  scale::Iterator<int> numbers(iota(20), *cluster.manager);
  const auto started = std::chrono::steady_clock::now();
  try {
    numbers.map(plus_one, scale::RunOptions{.chunk_size = 1}).get();
    FAIL("the call ran although every worker's setup threw");
  } catch (const scale::RemoteError& error) {
    CHECK(error.message() == "the model file is missing");
  }
  CHECK(std::chrono::steady_clock::now() - started < 10s);
  CHECK(cluster.manager->stats().setups_failed == 2);
  // A later call fails the same way, and broadcast has no worker to answer.
  CHECK_THROWS_WITH(numbers.map(plus_one).get(), Catch::Contains("the model file is missing"));
  CHECK(cluster.manager->broadcast_targets().get().empty());
}

int main(int argc, char** argv) {
  // In a worker this serves and never returns. In the parent the Runtime goes away again: each
  // test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}

TEST_CASE("a --scale-processes worker's children run the setup before their chunks", "[cluster][affinity]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerOptions processes;
  processes.extra = {"--scale-processes", "2"};
  WorkerProcess worker(url, processes);
  scale::ClusterManager manager(url, fast_options());
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  scale::SharedMemory memory(fresh_url());
  const std::string token = "children-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  memory.set("token", token).get();
  manager.on_every_worker(mark_setup, &memory);
  scale::Iterator<int> numbers(iota(60), manager);
  scale::RunOptions options{.chunk_size = 3};
  std::set<int> children;
  const auto marks = numbers.map(mark_seen, options).get();
  for (const auto& mark : marks) REQUIRE(mark == token);  // in the children, where the items ran
  const auto pids = numbers.map(pid_of, options).get();
  for (int pid : pids) children.insert(pid);
  CHECK(children.count(static_cast<int>(worker.pid())) == 0);  // the items ran in children
}
