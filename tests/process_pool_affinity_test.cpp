// ProcessPoolManager and worker identity with real child processes: keys stay on their child
// while it lives, a killed child's keys alone move (to its respawned child, which takes its slot
// back), setups run on a respawned child before its first chunk, a broadcast reply pinned to a
// killed child fails instead of hanging, and setups that keep failing stop the respawns.
// Children are children of this very executable: main() builds the Runtime from argc/argv first,
// and in a child it serves tasks and never returns.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/eventually.hpp"
#include "support/processes.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;
using support::eventually;
using support::process_gone;

std::vector<int> iota(int n) {
  std::vector<int> values(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) values[static_cast<std::size_t>(i)] = i;
  return values;
}

auto my_pid = [](int) { return static_cast<int>(::getpid()); };
auto key_mod_12 = [](const int& x) { return "key-" + std::to_string(x % 12); };

/// The setups this child process ran.
int& setup_runs() {
  static int runs = 0;
  return runs;
}
auto count_setup = [](scale::Scope& scope) -> scale::Future<void> {
  ++setup_runs();
  co_await scope.increment("setups");
};
auto setups_seen = [](int) { return setup_runs(); };

auto failing_setup = [](scale::Scope&) { throw std::runtime_error("no licence on this machine"); };
auto plus_one = [](int x) { return x + 1; };

/// Answers with its pid at once, except on the child whose pid it is given: there it reports
/// that it started and then never returns.
auto hang_on_pid = [](int victim, scale::Scope& scope) -> scale::Future<int> {
  co_await scope.increment("started");
  if (::getpid() == victim) std::this_thread::sleep_for(1h);
  co_return static_cast<int>(::getpid());
};

struct Placement {
  std::string worker;
  int pid = 0;
};

/// Where each key's items ran in one keyed call; REQUIREs that every item of a key ran on one
/// child (one worker id, one pid).
std::map<int, Placement> placements(scale::Iterator<int>& keyed) {
  auto results = keyed.map_with_workers(my_pid, {.chunk_size = 4}).get();
  REQUIRE(results.size() == 240);
  std::map<int, Placement> by_key;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const int key = static_cast<int>(i) % 12;
    auto [at, fresh] = by_key.try_emplace(key, Placement{results[i].worker, results[i].value});
    INFO("key " << key << ", item " << i);
    REQUIRE(at->second.worker == results[i].worker);
    REQUIRE(at->second.pid == results[i].value);
    REQUIRE(results[i].value != static_cast<int>(::getpid()));  // ran in a child
  }
  return by_key;
}

std::set<std::string> workers_in(const std::map<int, Placement>& by_key) {
  std::set<std::string> workers;
  for (const auto& [key, placed] : by_key) workers.insert(placed.worker);
  return workers;
}

}  // namespace

TEST_CASE("a key's items stay on one child across calls while it lives", "[process_pool][affinity]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 3});
  scale::Iterator<int> numbers(iota(240), manager);
  auto keyed = numbers.keyed_by(key_mod_12);
  const auto first = placements(keyed);
  // Twelve keys over three key slots: rendezvous hashing uses more than one of them.
  REQUIRE(workers_in(first).size() >= 2);
  for (int round = 0; round < 3; ++round) {
    const auto again = placements(keyed);
    for (const auto& [key, placed] : first) {
      INFO("round " << round << ", key " << key);
      CHECK(again.at(key).worker == placed.worker);
      CHECK(again.at(key).pid == placed.pid);
    }
  }
  CHECK(manager.stats().workers_lost == 0);
}

TEST_CASE("when a child is killed only its keys move, to the child that takes its slot back",
          "[process_pool][affinity]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 3});
  scale::Iterator<int> numbers(iota(240), manager);
  auto keyed = numbers.keyed_by(key_mod_12);
  const auto before = placements(keyed);
  REQUIRE(workers_in(before).size() >= 2);

  const std::string victim_worker = before.at(0).worker;
  const pid_t victim = before.at(0).pid;
  REQUIRE(::kill(victim, SIGKILL) == 0);
  REQUIRE(eventually([&] {
    auto pids = manager.worker_pids();
    return process_gone(victim) && std::find(pids.begin(), pids.end(), victim) == pids.end();
  }));

  const auto after = placements(keyed);
  for (const auto& [key, placed] : before) {
    INFO("key " << key << " was on " << placed.worker << " (pid " << placed.pid << ")");
    // Every key keeps its slot: the victim's wait for its respawned child.
    CHECK(after.at(key).worker == placed.worker);
    if (placed.worker == victim_worker)
      CHECK(after.at(key).pid != victim);  // a new process in the same slot
    else
      CHECK(after.at(key).pid == placed.pid);  // untouched
  }
  CHECK(manager.stats().workers_lost == 1);
}

TEST_CASE("a setup runs on a respawned child before its first chunk", "[process_pool][affinity]") {
  scale::Runtime runtime;
  scale::SharedMemory memory;
  memory.set("setups", 0).get();
  scale::ProcessPoolManager manager({.max_workers = 1, .min_workers = 1});
  manager.on_every_worker(count_setup, &memory);
  scale::Iterator<int> numbers(iota(50), manager);
  for (int seen : numbers.map(setups_seen, {.chunk_size = 5}).get()) REQUIRE(seen == 1);
  REQUIRE(memory.get<int>("setups").get() == 1);

  const std::vector<pid_t> first = manager.worker_pids();
  REQUIRE(first.size() == 1);
  REQUIRE(::kill(first.front(), SIGKILL) == 0);
  REQUIRE(eventually([&] { return process_gone(first.front()) && manager.stats().workers_lost == 1; }));

  // The replacement ran the setup once, before any of these items.
  std::vector<int> seen = numbers.map(setups_seen, {.chunk_size = 5}).get();
  for (int runs : seen) CHECK(runs == 1);
  const std::vector<pid_t> second = manager.worker_pids();
  REQUIRE(second.size() == 1);
  CHECK(second.front() != first.front());
  CHECK(memory.get<int>("setups").get() == 2);
  CHECK(manager.stats().setups_failed == 0);
}

TEST_CASE("a broadcast reply pinned to a child killed while it runs is an error, not a hang",
          "[process_pool][affinity]") {
  scale::Runtime runtime;
  scale::SharedMemory memory;
  memory.set("started", 0).get();
  scale::ProcessPoolManager manager({.max_workers = 2, .min_workers = 2});
  const auto pids = manager.broadcast(my_pid, 0).get();
  REQUIRE(pids.size() == 2);
  const pid_t victim = *pids.front().value;

  auto pending = manager.broadcast(hang_on_pid, static_cast<int>(victim), &memory);
  // Both children have started their reply; the victim's never returns by itself.
  REQUIRE(eventually([&] { return memory.get<int>("started").get() == 2; }));
  REQUIRE(::kill(victim, SIGKILL) == 0);

  const auto replies = pending.get();
  REQUIRE(replies.size() == 2);
  for (const auto& reply : replies) {
    INFO(reply.worker);
    if (reply.worker == pids.front().worker) {
      REQUIRE(reply.error);
      CHECK_FALSE(reply.value);
      CHECK_THROWS_AS(std::rethrow_exception(reply.error), scale::NoWorkers);
    } else {
      CHECK_FALSE(reply.error);
      CHECK(reply.value == *pids.back().value);
    }
  }
}

TEST_CASE("broadcast on a pool with no child alive starts one and answers from it", "[process_pool][affinity]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  REQUIRE(manager.worker_pids().empty());
  const auto replies = manager.broadcast(my_pid, 0).get();
  REQUIRE(replies.size() == 1);
  REQUIRE_FALSE(replies.front().error);
  CHECK(replies.front().worker.rfind("child-", 0) == 0);
  const auto pids = manager.worker_pids();
  REQUIRE(pids.size() == 1);
  CHECK(*replies.front().value == pids.front());
}

TEST_CASE("setups that fail on max_workers children stop the respawns and fail later calls with their error",
          "[process_pool][affinity]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  manager.on_every_worker(failing_setup);
  scale::Iterator<int> numbers(iota(20), manager);
  CHECK_THROWS_AS(numbers.map(plus_one, {.chunk_size = 1}).get(), scale::RemoteError);
  try {
    numbers.map(plus_one).get();
    FAIL("a call ran with every child's setup failing");
  } catch (const scale::RemoteError& error) {
    CHECK(error.message() == "no licence on this machine");
  }
  const auto stats = manager.stats();
  CHECK(stats.setups_failed == 2);
  CHECK(stats.workers_spawned == 2);  // one per failure allowed, then none
  CHECK_THROWS_AS(manager.broadcast_targets().get(), scale::RemoteError);
}

int main(int argc, char** argv) {
  // In a child this serves tasks and never returns; in the parent each test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
