// Iterator on the thread tiers: the shared behaviour suite on InlineManager and a 4-thread
// ThreadPoolManager, then what only those managers promise.

#include <scale/managers/inline.hpp>
#include <scale/managers/thread_pool.hpp>

#include <memory>

struct InlineFactory {
  static std::unique_ptr<scale::ScalabilityManager> make() { return std::make_unique<scale::InlineManager>(); }
};
struct ThreadPoolFactory {
  static std::unique_ptr<scale::ScalabilityManager> make() { return std::make_unique<scale::ThreadPoolManager>(4); }
};

#define SCALE_ITERATOR_FACTORIES InlineFactory, ThreadPoolFactory
#define SCALE_ITERATOR_TAGS "[iterator][inline][thread_pool]"
#include "iterator_suite.hpp"
#include "affinity_suite.hpp"
#include "control_suite.hpp"
#define SCALE_ROUTING_MANAGERS scale::InlineManager, scale::ThreadPoolManager
#include "routing_suite.hpp"

#include <atomic>
#include <string>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

using namespace std::chrono_literals;

namespace {

/// Has no to_json/from_json and cannot be copied through any codec: the thread tiers must pass
/// it by reference and never serialize it.
struct Opaque {
  explicit Opaque(int v) : value(v) {}
  int value;
  std::unique_ptr<int> not_serializable = std::make_unique<int>(0);
  Opaque(const Opaque& other) : value(other.value), not_serializable(std::make_unique<int>(0)) {}
};

std::atomic<int> g_items_run{0};

}  // namespace

TEST_CASE("the thread pool runs chunks on its own threads and passes items without serializing them",
          "[iterator][thread_pool]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager manager(4);
  REQUIRE(manager.concurrency() == 4);
  std::vector<Opaque> items;
  for (int i = 0; i < 200; ++i) items.emplace_back(i);
  scale::Iterator<Opaque> opaque(std::move(items), manager);
  const Opaque* first = &opaque.items()[0];
  std::mutex mutex;
  std::set<std::thread::id> threads;
  const auto main_thread = std::this_thread::get_id();
  bool on_loop = false;
  scale::RunOptions options{.chunk_size = 5};
  std::vector<const Opaque*> seen = opaque
                                        .map(
                                            [&](const Opaque& item) {
                                              std::lock_guard lock(mutex);
                                              threads.insert(std::this_thread::get_id());
                                              on_loop = on_loop || scale::detail::on_loop_thread();
                                              return &item;
                                            },
                                            options)
                                        .get();
  // The function saw the Iterator's own items, by reference: nothing was copied or encoded.
  for (std::size_t i = 0; i < seen.size(); ++i) REQUIRE(seen[i] == first + i);
  REQUIRE_FALSE(on_loop);
  REQUIRE_FALSE(threads.count(main_thread));
  REQUIRE(threads.size() >= 1);
  REQUIRE(threads.size() <= 4);
  auto stats = manager.stats();
  REQUIRE(stats.workers_alive == 4);
  REQUIRE(stats.workers_spawned == 4);
  REQUIRE(stats.tasks_done == 40);
}

TEST_CASE("an exception stops the thread pool from starting the remaining chunks", "[iterator][thread_pool]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager manager(1);
  scale::Iterator<int> numbers(iterator_suite::iota(10'000), manager);
  g_items_run = 0;
  scale::RunOptions options{.chunk_size = 1};
  auto counted_throw = [](int x) {
    ++g_items_run;
    if (x == 0) throw iterator_suite::ItemFailed("the first item failed");
    return x;
  };
  REQUIRE_THROWS_AS(numbers.map(counted_throw, options).get(), iterator_suite::ItemFailed);
  // Chunks already queued behind the failing one are skipped, never started.
  REQUIRE(g_items_run.load() < 10);
  auto stats = manager.stats();
  REQUIRE(stats.tasks_running == 0);
  REQUIRE(stats.tasks_queued == 0);
}

TEST_CASE("a failed call completes only after its running chunks have finished", "[iterator][thread_pool]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager manager(4);
  scale::Iterator<int> numbers(iterator_suite::iota(4), manager);
  static std::atomic<int> running{0};
  static std::atomic<int> finished{0};
  running = 0;
  finished = 0;
  scale::RunOptions options{.chunk_size = 1};
  auto slow_or_throw = [](int x) {
    ++running;
    if (x == 0) {
      while (running.load() < 4) std::this_thread::yield();  // all four chunks are running
      throw iterator_suite::ItemFailed("fast failure");
    }
    std::this_thread::sleep_for(50ms);
    ++finished;
    return x;
  };
  REQUIRE_THROWS_AS(numbers.for_each(slow_or_throw, options).get(), iterator_suite::ItemFailed);
  REQUIRE(finished.load() == 3);
}

TEST_CASE("destroying a thread pool fails its queued chunks with Stopped and joins its threads",
          "[iterator][thread_pool]") {
  scale::Runtime runtime;
  auto manager = std::make_unique<scale::ThreadPoolManager>(1);
  scale::Iterator<int> numbers(iterator_suite::iota(8), *manager);
  static std::atomic<bool> release{false};
  static std::atomic<int> started{0};
  release = false;
  started = 0;
  auto blocked = [](int x) {
    ++started;
    while (!release.load()) std::this_thread::yield();
    return x;
  };
  scale::RunOptions options{.chunk_size = 1};
  auto pending = numbers.map(blocked, options);
  while (started.load() == 0) std::this_thread::yield();
  std::thread releaser([] {
    std::this_thread::sleep_for(20ms);
    release = true;
  });
  manager.reset();  // the running chunk finishes; the one queued behind it fails with Stopped
  releaser.join();
  REQUIRE_THROWS_AS(pending.get(), scale::Stopped);
  REQUIRE(started.load() == 1);
}

TEST_CASE("InlineManager runs every chunk on the loop thread", "[iterator][inline]") {
  scale::Runtime runtime;
  scale::InlineManager manager;
  scale::Iterator<int> numbers(iterator_suite::iota(100), manager);
  static std::atomic<int> off_loop{0};
  off_loop = 0;
  scale::RunOptions options{.chunk_size = 9};
  numbers
      .for_each(
          [](int) {
            if (!scale::detail::on_loop_thread()) ++off_loop;
          },
          options)
      .get();
  REQUIRE(off_loop.load() == 0);
  auto stats = manager.stats();
  REQUIRE(stats.workers_alive == 1);
  REQUIRE(stats.tasks_done == 12);
}

TEST_CASE("functions may capture state on the thread tiers", "[iterator][inline][thread_pool]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  scale::InlineManager inline_manager;
  for (scale::ScalabilityManager* manager :
       {static_cast<scale::ScalabilityManager*>(&pool), static_cast<scale::ScalabilityManager*>(&inline_manager)}) {
    scale::Iterator<int> numbers(iterator_suite::iota(1000), *manager);
    std::atomic<long> total{0};
    int offset = 5;
    numbers.for_each([&total, offset](int x) { total += x + offset; }).get();
    REQUIRE(total.load() == 499'500 + 5'000);
  }
}

TEST_CASE("automatic chunk sizes: small probes, then the target duration, shrinking near the end",
          "[iterator][dispatch]") {
  using namespace std::chrono_literals;
  using scale::detail::next_chunk_size;
  // Before any measurement: a small probe, at most 64 items, a small share of the call.
  REQUIRE(next_chunk_size(400, 400, 8, 0ns, 200ms) == 3);
  REQUIRE(next_chunk_size(10'000'000, 10'000'000, 2, 0ns, 1ms) == 64);
  REQUIRE(next_chunk_size(5, 5, 4, 0ns, 1ms) == 1);
  // Measured: the target duration over the time per item (20 ms items, 200 ms target).
  REQUIRE(next_chunk_size(352, 400, 8, 20ms, 200ms) == 10);
  // Guided self-scheduling caps a chunk at the rest over twice the workers.
  REQUIRE(next_chunk_size(1'000, 1'000, 2, 100us, 50ms) == 250);
  // ... but never below 1/50 of the target: 1,000 items of 10 ns are one chunk, and fast items
  // near the end of a large call stay in chunks of about 1 ms on a process pool.
  REQUIRE(next_chunk_size(1'000, 1'000, 2, 10ns, 50ms) == 1'000);
  REQUIRE(next_chunk_size(200'000, 1'000'000, 2, 10ns, 50ms) == 100'000);
  // Near the end chunks shrink to single items, never beyond what is left.
  REQUIRE(next_chunk_size(3, 400, 8, 20ms, 200ms) == 1);
  REQUIRE(next_chunk_size(1, 1, 1, 1ns, 1ms) == 1);
  // Items faster than a nanosecond (a tight loop over ints) are measured, not taken for unmeasured.
  using PerItem = scale::detail::PerItem;
  REQUIRE(next_chunk_size(10'000'000, 10'000'000, 2, PerItem(0.25), 1ms) == 2'500'000);
  REQUIRE(next_chunk_size(1'000'000, 10'000'000, 2, PerItem(0.5), 100us) == 200'000);
  REQUIRE(next_chunk_size(0, 10, 1, 1ns, 1ms) == 0);
  // Slow items never get more than one per chunk when one item outlasts the target.
  REQUIRE(next_chunk_size(100, 100, 2, 2s, 50ms) == 1);
}

TEST_CASE("a call's chunks follow the measured cost: slow items spread over every thread",
          "[iterator][dispatch][thread_pool]") {
  // 32 items of 5 ms on 4 threads: a fixed plan of 128-item chunks would run them on one
  // thread; measured sizing spreads them, so at least three threads see an item.
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(4);
  scale::Iterator<int> items(iterator_suite::iota(32), pool);
  std::mutex mutex;
  std::set<std::thread::id> threads;
  auto seen = items
                  .map([&](int x) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(5));
                    std::lock_guard lock(mutex);
                    threads.insert(std::this_thread::get_id());
                    return x * 2;
                  })
                  .get();
  REQUIRE(seen.size() == 32);
  for (int i = 0; i < 32; ++i) REQUIRE(seen[static_cast<std::size_t>(i)] == 2 * i);
  REQUIRE(threads.size() >= 3);
}

TEST_CASE("reduce with measured chunk sizes combines its partials in item order", "[iterator][dispatch][thread_pool]") {
  // String concatenation is associative but not commutative: any reordering of the partials
  // (whose number the dispatch decides as it goes) shows in the answer.
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(3);
  std::vector<std::string> letters;
  std::string expected;
  for (int i = 0; i < 2'000; ++i) {
    letters.push_back(std::string(1, static_cast<char>('a' + i % 26)));
    expected += letters.back();
  }
  scale::Iterator<std::string> items(letters, pool);
  auto joined = items.reduce([](std::string a, const std::string& b) { return a + b; }, std::string()).get();
  REQUIRE(joined == expected);
}

TEST_CASE("a Future-returning function on InlineManager may co_await a nested map on the same manager",
          "[iterator][inline][nested]") {
  // The loop runs both levels: the outer chunk suspends in co_await while the nested chunks run as
  // loop tasks of their own, so nothing waits for itself.
  scale::Runtime runtime;
  scale::InlineManager manager;
  static scale::InlineManager* nested_on = nullptr;
  nested_on = &manager;
  scale::Iterator<int> outer(iterator_suite::iota(6), manager);
  auto sums = outer
                  .map([](int x) -> scale::Future<int> {
                    scale::Iterator<int> inner(iterator_suite::iota(x + 1), *nested_on);
                    scale::Future<std::vector<int>> mapped = inner.map([](int y) { return y * 10; });
                    std::vector<int> values = co_await std::move(mapped);
                    int sum = 0;
                    for (int v : values) sum += v;
                    co_return sum;
                  })
                  .get();
  REQUIRE(sums == std::vector<int>{0, 10, 30, 60, 100, 150});
}
