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

#include <atomic>
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

TEST_CASE("the automatic chunk size balances the workers", "[iterator][inline][thread_pool]") {
  scale::ThreadPoolManager pool(4);
  scale::InlineManager inline_manager;
  REQUIRE(pool.auto_chunk_size(1'600) == 100);  // four chunks per thread
  REQUIRE(pool.auto_chunk_size(3) == 1);
  REQUIRE(inline_manager.auto_chunk_size(1'600) == 100);
  REQUIRE(inline_manager.auto_chunk_size(5) == 1);
}
