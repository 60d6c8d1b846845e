#pragma once
// The worker-identity behaviour suite: map_with_workers, keyed_by, broadcast and on_every_worker,
// written once and run on every manager. Include it after iterator_suite.hpp, with the same
// SCALE_ITERATOR_FACTORIES and SCALE_ITERATOR_TAGS:
//
//   #include "iterator_suite.hpp"
//   #include "affinity_suite.hpp"
//
// What a worker is differs by manager (a thread slot, a child slot, a cluster worker), so the
// cases check what every manager promises: each result names a worker the manager broadcasts to,
// a key's items all name one worker, a broadcast answers once per worker, and a setup has run on
// a worker before any of its items. Setups leave a mark in the worker itself (a thread_local on the
// thread tiers, a process-wide counter where work ships to other processes), which only that
// worker's items can see.

#include <catch2/catch.hpp>

#include <scale/broadcast.hpp>
#include <scale/error.hpp>
#include <scale/iterator.hpp>
#include <scale/scope.hpp>
#include <scale/shared_memory.hpp>
#include <scale/worker_result.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <cstddef>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace affinity_suite {

using iterator_suite::iota;
using iterator_suite::ships;

/// The token the last setup in this thread / this process read from the scope.
inline std::string& thread_mark() {
  thread_local std::string mark;
  return mark;
}
inline std::string process_mark(const std::string* set = nullptr) {
  static std::mutex mutex;
  static std::string mark;
  std::lock_guard lock(mutex);
  if (set != nullptr) mark = *set;
  return mark;
}

inline constexpr auto mark_setup = [](scale::Scope& scope) -> scale::Future<void> {
  std::string token = co_await scope.get<std::string>("token");
  thread_mark() = token;
  process_mark(&token);
};
inline constexpr auto mark_seen_by_thread = [](int) { return thread_mark(); };
inline constexpr auto mark_seen_by_process = [](int) { return process_mark(); };

inline constexpr auto failing_setup = [](scale::Scope&) { throw std::runtime_error("the model file is missing"); };

inline constexpr auto plus_one = [](int x) { return x + 1; };
inline constexpr auto odd_fails = [](int x) {
  if (x % 2 != 0) throw std::runtime_error("odd input");
  return x;
};
inline constexpr auto key_mod_7 = [](const int& x) { return "k" + std::to_string(x % 7); };
inline constexpr auto count_ran = [](int, scale::Scope& scope) -> scale::Future<void> {
  co_await scope.increment("ran");
};

template <class R>
std::set<std::string> workers_of(const std::vector<scale::WorkerResult<R>>& results) {
  std::set<std::string> workers;
  for (const auto& result : results) workers.insert(result.worker);
  return workers;
}

}  // namespace affinity_suite

TEMPLATE_TEST_CASE("map_with_workers gives each result in input order with a worker the manager broadcasts to",
                   SCALE_ITERATOR_TAGS "[affinity]", SCALE_ITERATOR_FACTORIES) {
  using namespace affinity_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iota(300), *manager);
  scale::RunOptions options{.chunk_size = 7};
  auto results = numbers.map_with_workers(plus_one, options).get();
  REQUIRE(results.size() == 300);
  for (std::size_t i = 0; i < results.size(); ++i) {
    REQUIRE(results[i].value == static_cast<int>(i) + 1);
    REQUIRE_FALSE(results[i].worker.empty());
  }
  auto targets = manager->broadcast_targets().get();
  const std::set<std::string> live(targets.begin(), targets.end());
  for (const std::string& worker : workers_of(results)) CHECK(live.count(worker) == 1);
}

TEMPLATE_TEST_CASE("keyed_by sends every item of a key to one worker and keeps input order",
                   SCALE_ITERATOR_TAGS "[affinity]", SCALE_ITERATOR_FACTORIES) {
  using namespace affinity_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iota(280), *manager);
  auto keyed = numbers.keyed_by(key_mod_7);
  scale::RunOptions options{.chunk_size = 3};  // several chunks per key
  auto results = keyed.map_with_workers(plus_one, options).get();
  REQUIRE(results.size() == 280);
  std::map<int, std::set<std::string>> workers_by_key;
  for (std::size_t i = 0; i < results.size(); ++i) {
    REQUIRE(results[i].value == static_cast<int>(i) + 1);
    workers_by_key[static_cast<int>(i) % 7].insert(results[i].worker);
  }
  for (const auto& [key, workers] : workers_by_key) {
    INFO("key " << key);
    CHECK(workers.size() == 1);
  }
  // The same keys go to the same workers on the next call.
  auto again = keyed.map_with_workers(plus_one, options).get();
  for (std::size_t i = 0; i < again.size(); ++i) CHECK(again[i].worker == *workers_by_key[static_cast<int>(i) % 7].begin());

  SECTION("the other algorithms keep their meaning") {
    auto mapped = keyed.map(plus_one).get();
    REQUIRE(mapped.size() == 280);
    for (std::size_t i = 0; i < mapped.size(); ++i) REQUIRE(mapped[i] == static_cast<int>(i) + 1);
    auto even = keyed.filter(iterator_suite::is_even).get();
    REQUIRE(even.size() == 140);
    for (std::size_t i = 0; i < even.size(); ++i) REQUIRE(even[i] == static_cast<int>(2 * i));
    CHECK(keyed.reduce(iterator_suite::plus, 0).get() == 279 * 280 / 2);
  }
}

TEMPLATE_TEST_CASE("a key function that throws fails the call before any item runs", SCALE_ITERATOR_TAGS "[affinity]",
                   SCALE_ITERATOR_FACTORIES) {
  using namespace affinity_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  memory.set("ran", 0).get();
  scale::Iterator<int> numbers(iota(50), *manager);
  numbers.use_scope(memory);
  auto keyed = numbers.keyed_by([](const int& x) -> std::string {
    if (x == 40) throw std::invalid_argument("item 40 has no key");
    return std::to_string(x % 3);
  });
  CHECK_THROWS_AS(keyed.for_each(count_ran).get(), std::invalid_argument);
  CHECK(memory.get<int>("ran").get() == 0);
}

TEMPLATE_TEST_CASE("broadcast answers once per live worker, with each worker's value or error",
                   SCALE_ITERATOR_TAGS "[affinity]", SCALE_ITERATOR_FACTORIES) {
  using namespace affinity_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  auto replies = manager->broadcast(plus_one, 41).get();
  REQUIRE_FALSE(replies.empty());
  std::set<std::string> workers;
  for (const auto& reply : replies) {
    REQUIRE_FALSE(reply.error);
    REQUIRE(reply.value == 42);
    workers.insert(reply.worker);
  }
  CHECK(workers.size() == replies.size());
  auto targets = manager->broadcast_targets().get();
  CHECK(std::set<std::string>(targets.begin(), targets.end()) == workers);

  auto failed = manager->broadcast(odd_fails, 3).get();
  REQUIRE(failed.size() == replies.size());
  for (const auto& reply : failed) {
    CHECK_FALSE(reply.value);
    CHECK(reply.error);
  }
}

TEMPLATE_TEST_CASE("on_every_worker runs its setup on each worker before that worker's first item",
                   SCALE_ITERATOR_TAGS "[affinity]", SCALE_ITERATOR_FACTORIES) {
  using namespace affinity_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  // A token of this test alone, so a mark left by an earlier test in the same thread cannot pass.
  const std::string token = "setup-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  memory.set("token", token).get();
  manager->on_every_worker(mark_setup, &memory);
  scale::Iterator<int> numbers(iota(200), *manager);
  scale::RunOptions options{.chunk_size = 5};
  std::vector<std::string> seen;
  if constexpr (ships<TestType>())
    seen = numbers.map(mark_seen_by_process, options).get();
  else
    seen = numbers.map(mark_seen_by_thread, options).get();
  for (const std::string& mark : seen) CHECK(mark == token);
  // Every worker, also those that ran none of the items, has run it before a broadcast's chunk.
  std::vector<scale::WorkerReply<std::string>> replies;
  if constexpr (ships<TestType>())
    replies = manager->broadcast(mark_seen_by_process, 0).get();
  else
    replies = manager->broadcast(mark_seen_by_thread, 0).get();
  for (const auto& reply : replies) CHECK(reply.value == token);
  CHECK(manager->stats().setups_failed == 0);
}

TEMPLATE_TEST_CASE("a setup that throws keeps its worker from the chunks, and a call with no worker left fails",
                   SCALE_ITERATOR_TAGS "[affinity]", SCALE_ITERATOR_FACTORIES) {
  using namespace affinity_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  manager->on_every_worker(failing_setup);
  scale::Iterator<int> numbers(iota(20), *manager);
  scale::RunOptions options{.chunk_size = 1};
  try {
    numbers.map(plus_one, options).get();
    FAIL("the call ran although every worker's setup threw");
  } catch (const std::exception& error) {
    CHECK_THAT(error.what(), Catch::Matchers::Contains("the model file is missing"));
  }
  CHECK(manager->stats().setups_failed >= 1);
}
