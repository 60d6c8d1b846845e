// Routing on the thread tiers beyond the shared suite (tests/routing_suite.hpp): maps nested in a
// chunk that holds amounts, and how routing meets resize(0).

#include <catch2/catch.hpp>

#include <scale/error.hpp>
#include <scale/iterator.hpp>
#include <scale/managers/inline.hpp>
#include <scale/managers/thread_pool.hpp>
#include <scale/runtime.hpp>
#include <scale/sleep_for.hpp>
#include <scale/broadcast.hpp>
#include <scale/worker_result.hpp>

#include "support/eventually.hpp"

#include <algorithm>
#include <map>
#include <string>
#include <atomic>
#include <chrono>
#include <numeric>
#include <thread>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

using namespace std::chrono_literals;

namespace {

std::vector<int> iota(int n) {
  std::vector<int> items(static_cast<std::size_t>(n));
  std::iota(items.begin(), items.end(), 0);
  return items;
}

/// Counts how many run at once, and the most there ever were.
struct Concurrency {
  std::atomic<int> running{0};
  std::atomic<int> peak{0};
  void enter() {
    const int now = ++running;
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  }
  void leave() { --running; }
};

}  // namespace

TEST_CASE("a map nested in a chunk that holds the only gpu runs under that chunk's hold, one chunk at a time",
          "[routing][thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(3, {.provides = {{"gpu", "1"}}});
  Concurrency gpu_users;
  scale::RunOptions gpu{.chunk_size = 1, .resources = {{"gpu", 1}}};
  scale::Iterator<int> outer(iota(4), pool);
  // Each outer item holds the gpu and maps on the same pool with a call that needs it too: without
  // the outer chunk lending what it holds, the inner call would wait for ever on its own caller.
  const std::vector<int> sums = outer
                                    .map(
                                        [&](int a) {
                                          scale::Iterator<int> inner(iota(6), pool);
                                          const std::vector<int> values = inner
                                                                              .map(
                                                                                  [&, a](int b) {
                                                                                    gpu_users.enter();
                                                                                    std::this_thread::sleep_for(1ms);
                                                                                    gpu_users.leave();
                                                                                    return a * 10 + b;
                                                                                  },
                                                                                  gpu)
                                                                              .get();
                                          return std::accumulate(values.begin(), values.end(), 0);
                                        },
                                        gpu)
                                    .get();
  REQUIRE(sums == std::vector<int>{15, 75, 135, 195});
  // The inner chunks ran one at a time: only the holding thread may run them, under its hold.
  REQUIRE(gpu_users.peak == 1);
  // Every amount came back: a gpu call runs, and other threads were free all along.
  REQUIRE(outer.map([](int x) { return x; }, gpu).get() == iota(4));
  REQUIRE(pool.stats().tasks_queued == 0);
}

TEST_CASE("a gpu map nested two levels below the chunk that holds the gpu, through a call that needs nothing, completes",
          "[routing][thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2, {.provides = {{"gpu", "1"}}});
  scale::RunOptions gpu{.chunk_size = 1, .resources = {{"gpu", 1}}};
  scale::RunOptions free{.chunk_size = 1};
  scale::Iterator<int> outer(iota(2), pool);
  const std::vector<int> totals = outer
                                      .map(
                                          [&](int a) {
                                            scale::Iterator<int> middle(iota(3), pool);
                                            const std::vector<int> parts =
                                                middle
                                                    .map(
                                                        [&, a](int b) {
                                                          scale::Iterator<int> inner(iota(2), pool);
                                                          const std::vector<int> leaves =
                                                              inner.map([a, b](int c) { return a * 100 + b * 10 + c; }, gpu)
                                                                  .get();
                                                          return std::accumulate(leaves.begin(), leaves.end(), 0);
                                                        },
                                                        free)
                                                    .get();
                                            return std::accumulate(parts.begin(), parts.end(), 0);
                                          },
                                          gpu)
                                      .get();
  REQUIRE(totals == std::vector<int>{63, 663});
}

TEST_CASE("on InlineManager a map made before a gpu chunk's first co_await runs under the chunk's hold",
          "[routing][inline][nested]") {
  scale::Runtime runtime;
  scale::InlineManager manager({.provides = {{"gpu", "1"}}});
  static scale::InlineManager* nested_on = nullptr;
  nested_on = &manager;
  scale::RunOptions gpu{.chunk_size = 1, .resources = {{"gpu", 1}}};
  scale::Iterator<int> outer(iota(3), manager);
  const std::vector<int> sums = outer
                                    .map(
                                        [](int x) -> scale::Future<int> {
                                          scale::Iterator<int> inner(iota(x + 2), *nested_on);
                                          scale::RunOptions needs_gpu{.chunk_size = 1, .resources = {{"gpu", 1}}};
                                          scale::Future<std::vector<int>> mapped =
                                              inner.map([](int y) { return y * 10; }, needs_gpu);
                                          std::vector<int> values = co_await std::move(mapped);
                                          co_return std::accumulate(values.begin(), values.end(), 0);
                                        },
                                        gpu)
                                    .get();
  REQUIRE(sums == std::vector<int>{10, 30, 60});
  REQUIRE(manager.stats().tasks_queued == 0);
  REQUIRE(manager.stats().tasks_running == 0);
}

TEST_CASE("on InlineManager a gpu map made after a co_await in a gpu chunk runs on what is left free",
          "[routing][inline][nested]") {
  scale::Runtime runtime;
  scale::InlineManager manager({.provides = {{"gpu", "2"}}});
  static scale::InlineManager* nested_on = nullptr;
  nested_on = &manager;
  scale::RunOptions gpu{.chunk_size = 1, .resources = {{"gpu", 1}}};
  scale::Iterator<int> outer(iota(1), manager);
  const std::vector<int> sums = outer
                                    .map(
                                        [](int x) -> scale::Future<int> {
                                          scale::Future<void> pause = scale::sleep_for(1ms);
                                          co_await std::move(pause);
                                          // Made on the loop after the co_await: an independent call,
                                          // which takes the second gpu.
                                          scale::Iterator<int> inner(iota(4), *nested_on);
                                          scale::RunOptions needs_gpu{.chunk_size = 1, .resources = {{"gpu", 1}}};
                                          scale::Future<std::vector<int>> mapped =
                                              inner.map([x](int y) { return x + y; }, needs_gpu);
                                          std::vector<int> values = co_await std::move(mapped);
                                          co_return std::accumulate(values.begin(), values.end(), 0);
                                        },
                                        gpu)
                                    .get();
  REQUIRE(sums == std::vector<int>{6});
}

TEST_CASE("a thread pool resized to 0 still refuses a call it can never meet with Unsatisfiable, and others with NoWorkers",
          "[routing][thread_pool]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2, {.provides = {{"gpu", "1"}}});
  pool.resize(0);
  scale::Iterator<int> numbers(iota(4), pool);
  scale::RunOptions meets{.resources = {{"gpu", 1}}};
  scale::RunOptions never{.resources = {{"gpu", 2}}};
  REQUIRE_THROWS_AS(numbers.map([](int x) { return x; }, meets).get(), scale::NoWorkers);
  REQUIRE_THROWS_AS(numbers.map([](int x) { return x; }, never).get(), scale::Unsatisfiable);
  REQUIRE_THROWS_AS(numbers.map([](int x) { return x; }).get(), scale::NoWorkers);
  pool.resize(2);
  REQUIRE(numbers.map([](int x) { return x; }, meets).get() == iota(4));
}

namespace {

std::map<std::string, std::string> worker_by_key(const std::vector<scale::WorkerResult<int>>& results) {
  std::map<std::string, std::string> workers;
  for (std::size_t i = 0; i < results.size(); ++i) workers["k" + std::to_string(i % 100)] = results[i].worker;
  return workers;
}

}  // namespace

TEST_CASE("keyed_by on a thread pool: a thread that joins takes only keys it wins, one that retires moves only its own",
          "[thread_pool][affinity]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(3);
  scale::Iterator<int> numbers(iota(400), pool);
  auto keyed = numbers.keyed_by([](const int& x) { return "k" + std::to_string(x % 100); });
  auto identity = [](int x) { return x; };
  const auto before = worker_by_key(keyed.map_with_workers(identity).get());
  REQUIRE(before.size() == 100);

  pool.resize(4);
  const auto grown = worker_by_key(keyed.map_with_workers(identity).get());
  std::size_t moved = 0;
  for (const auto& [key, worker] : grown) {
    if (worker == before.at(key)) continue;
    ++moved;
    CHECK(worker == "thread-3");  // the new slot: nobody else's keys move
  }
  CHECK(moved > 0);
  CHECK(moved < 60);  // about a quarter

  pool.resize(2);
  REQUIRE(support::eventually([&] { return pool.stats().workers_alive == 2; }));
  const auto targets = pool.broadcast_targets().get();
  REQUIRE(targets.size() == 2);
  const auto shrunk = worker_by_key(keyed.map_with_workers(identity).get());
  for (const auto& [key, worker] : shrunk) {
    CHECK(std::find(targets.begin(), targets.end(), worker) != targets.end());
    const std::string& was = grown.at(key);
    if (std::find(targets.begin(), targets.end(), was) != targets.end()) CHECK(worker == was);  // kept its worker
  }
}

TEST_CASE("a setup registered on a thread pool runs on threads that resize starts later", "[thread_pool][affinity]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(1);
  static std::atomic<int> setups{0};
  setups = 0;
  pool.on_every_worker([](scale::Scope&) { ++setups; });
  scale::Iterator<int> numbers(iota(10), pool);
  numbers.for_each([](int) {}).get();
  CHECK(setups == 1);
  pool.resize(3);
  auto replies = pool.broadcast([](int x) { return x; }, 1).get();
  CHECK(replies.size() == 3);
  CHECK(setups == 3);
}

TEST_CASE("keyed maps nested in every thread's chunk of a thread pool complete", "[thread_pool][affinity]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  scale::Iterator<int> outer(iota(4), pool);
  auto sums = outer
                  .map([&pool](int x) {
                    scale::Iterator<int> inner(iota(60), pool);
                    auto keyed = inner.keyed_by([](const int& y) { return std::to_string(y % 10); });
                    scale::RunOptions options{.chunk_size = 2};
                    auto values = keyed.map([x](int y) { return x + y; }, options).get();
                    return std::accumulate(values.begin(), values.end(), 0);
                  })
                  .get();
  REQUIRE(sums.size() == 4);
  for (int x = 0; x < 4; ++x) CHECK(sums[static_cast<std::size_t>(x)] == 60 * x + 59 * 60 / 2);
}
