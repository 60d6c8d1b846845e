// ThreadPoolManager: resize and adapt while maps run, resize(0), invalid policies, and nested
// calls (maps, filters, reductions, for_each inside a pool function, on the same pool or another)
// that complete because a waiting thread runs the chunks nested in its own.

#include <catch2/catch.hpp>

#include <scale/error.hpp>
#include <scale/iterator.hpp>
#include <scale/managers/thread_pool.hpp>
#include <scale/runtime.hpp>
#include <scale/scaling_policy.hpp>
#include <scale/sleep_for.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/eventually.hpp"
#include "support/iota.hpp"

using namespace std::chrono_literals;

namespace {

using support::eventually;
using support::iota;

/// Items that wait for the test: each arrive()s, then wait()s until the test open()s the gate.
/// Waits are bounded, so a broken pool fails the test instead of hanging it.
class Gate {
 public:
  void arrive() {
    {
      std::lock_guard lock(m_mutex);
      ++m_arrived;
    }
    m_cv.notify_all();
  }
  void wait() {
    std::unique_lock lock(m_mutex);
    m_cv.wait_for(lock, 10s, [&] { return m_open; });
  }
  void open() {
    {
      std::lock_guard lock(m_mutex);
      m_open = true;
    }
    m_cv.notify_all();
  }
  /// True once `n` items have arrived (false after 10 s).
  bool arrived(std::size_t n) {
    std::unique_lock lock(m_mutex);
    return m_cv.wait_for(lock, 10s, [&] { return m_arrived >= n; });
  }

 private:
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::size_t m_arrived = 0;
  bool m_open = false;
};

/// A map of iota(n) on `pool` in chunks of `chunk_size` whose items count their runs in `runs`
/// and wait at `gate` (so the test changes the pool while they are inside), then return
/// `after_gate(x)`.
template <class F>
auto gated_map(scale::ThreadPoolManager& pool, int n, std::size_t chunk_size, std::vector<std::atomic<int>>& runs,
               Gate& gate, F after_gate) {
  scale::Iterator<int> items(iota(n), pool);
  scale::RunOptions options;
  options.chunk_size = chunk_size;
  return items.map(
      [&runs, &gate, after_gate](int x) {
        runs[static_cast<std::size_t>(x)].fetch_add(1);
        gate.arrive();
        gate.wait();
        return after_gate(x);
      },
      options);
}

}  // namespace

TEST_CASE("a pool resized up while a map runs spreads the rest of the map over the new threads",
          "[thread_pool][resize]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(1);
  Gate gate;
  std::atomic<bool> resized{false};
  std::mutex mutex;
  std::set<std::thread::id> threads_after;
  scale::Iterator<int> items(iota(60), pool);
  scale::RunOptions options;
  options.chunk_size = 1;
  auto doubled = items.map(
      [&](int x) {
        gate.arrive();
        gate.wait();
        if (resized.load()) {
          std::lock_guard lock(mutex);
          threads_after.insert(std::this_thread::get_id());
        }
        std::this_thread::sleep_for(5ms);  // a slow item
        return 2 * x;
      },
      options);
  REQUIRE(gate.arrived(1));  // the one thread is inside the first item
  pool.resize(3);
  resized.store(true);
  gate.open();
  const std::vector<int> result = doubled.get();

  std::vector<int> expected = iota(60);
  for (int& x : expected) x *= 2;
  REQUIRE(result == expected);
  REQUIRE(threads_after.size() == 3);  // the two new threads ran items of the running map
  const auto stats = pool.stats();
  REQUIRE(stats.workers_alive == 3);
  REQUIRE(stats.workers_spawned == 3);
  REQUIRE(stats.workers_target == 3);
  REQUIRE(pool.concurrency() == 3);
}

TEST_CASE("a pool resized down while a map runs loses no item, runs none twice and lets busy threads finish",
          "[thread_pool][resize]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(4);
  constexpr int n = 80;
  std::vector<std::atomic<int>> runs(n);
  Gate gate;
  auto plus_one = gated_map(pool, n, 2, runs, gate, [](int x) {
    std::this_thread::sleep_for(1ms);
    return x + 1;
  });
  REQUIRE(gate.arrived(4));  // all four threads are inside a chunk
  pool.resize(1);
  REQUIRE(pool.concurrency() == 1);
  gate.open();
  const std::vector<int> result = plus_one.get();

  for (int i = 0; i < n; ++i) {
    REQUIRE(result[static_cast<std::size_t>(i)] == i + 1);
    REQUIRE(runs[static_cast<std::size_t>(i)].load() == 1);
  }
  REQUIRE(eventually([&] { return pool.stats().workers_alive == 1; }));
  const auto stats = pool.stats();
  REQUIRE(stats.workers_target == 1);
  REQUIRE(stats.tasks_retried == 0);
  REQUIRE(stats.tasks_failed == 0);
  REQUIRE(stats.tasks_done == n / 2);
}

TEST_CASE("a map on a pool resized to 0 fails at once with NoWorkers saying what to do", "[thread_pool][resize]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  pool.resize(0);
  REQUIRE(pool.concurrency() == 0);
  REQUIRE(eventually([&] { return pool.stats().workers_alive == 0; }));
  scale::Iterator<int> items(iota(10), pool);
  try {
    (void)items.map([](int x) { return x; }).get();
    FAIL("a map on a pool with no threads and no adapt must fail");
  } catch (const scale::NoWorkers& error) {
    const std::string message = error.what();
    REQUIRE(message.find("resize") != std::string::npos);
    REQUIRE(message.find("adapt") != std::string::npos);
  }
  REQUIRE(pool.stats().tasks_queued == 0);

  // Given threads again, the same pool runs maps again.
  pool.resize(2);
  REQUIRE(items.map([](int x) { return x * 3; }).get()[9] == 27);
}

TEST_CASE("chunks queued when a pool shrinks to 0 still run, and the call then fails with NoWorkers",
          "[thread_pool][resize]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  constexpr int n = 20;
  std::vector<std::atomic<int>> runs(n);
  Gate gate;
  auto same = gated_map(pool, n, 1, runs, gate, [](int x) { return x; });
  REQUIRE(gate.arrived(2));  // both threads busy; more chunks queued behind them
  pool.resize(0);
  gate.open();
  REQUIRE_THROWS_AS(same.get(), scale::NoWorkers);

  REQUIRE(eventually([&] { return pool.stats().workers_alive == 0; }));
  const auto stats = pool.stats();
  REQUIRE(stats.tasks_queued == 0);  // nothing left behind to hang
  REQUIRE(stats.tasks_running == 0);
  int ran = 0;
  for (int i = 0; i < n; ++i) {
    REQUIRE(runs[static_cast<std::size_t>(i)].load() <= 1);
    ran += runs[static_cast<std::size_t>(i)].load();
  }
  REQUIRE(runs[0].load() == 1);  // the busy threads finished their chunks
  REQUIRE(runs[1].load() == 1);
  REQUIRE(static_cast<std::size_t>(ran) == stats.tasks_done);  // every queued chunk ran
  REQUIRE(ran < n);
}

TEST_CASE("adapt grows the pool under backlog and shrinks it after the window", "[thread_pool][adapt]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(1);
  pool.adapt({.min = 0, .max = 4, .backlog_per_worker = 1, .scale_down_after = 200ms});
  std::atomic<std::size_t> most_alive{0};
  std::mutex mutex;
  std::set<std::thread::id> threads;
  auto run_map = [&] {
    scale::Iterator<int> items(iota(40), pool);
    scale::RunOptions options;
    options.chunk_size = 1;
    return items
        .map(
            [&](int x) {
              const std::size_t alive = pool.stats().workers_alive;
              std::size_t seen = most_alive.load();
              while (alive > seen && !most_alive.compare_exchange_weak(seen, alive)) {
              }
              {
                std::lock_guard lock(mutex);
                threads.insert(std::this_thread::get_id());
              }
              std::this_thread::sleep_for(10ms);  // a slow item
              return x;
            },
            options)
        .get();
  };
  REQUIRE(run_map() == iota(40));
  REQUIRE(most_alive.load() == 4);  // 40 chunks of backlog, one per worker: up to max at once
  REQUIRE(threads.size() == 4);

  // No backlog: after the 200 ms window the pool goes down to min (0), joining its threads.
  REQUIRE(eventually([&] {
    const auto stats = pool.stats();
    return stats.workers_alive == 0 && stats.workers_target == 0;
  }));
  REQUIRE(pool.concurrency() == 0);

  // From 0 threads, a new call's backlog starts them again.
  most_alive = 0;
  REQUIRE(run_map() == iota(40));
  REQUIRE(most_alive.load() == 4);
  REQUIRE(pool.stats().tasks_retried == 0);
}

TEST_CASE("resize turns adapt off, and adapt turns a fixed count off", "[thread_pool][adapt][resize]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(1);
  pool.adapt({.min = 3, .max = 3});
  REQUIRE(eventually([&] { return pool.stats().workers_alive == 3; }));
  REQUIRE(pool.concurrency() == 3);

  pool.resize(1);
  REQUIRE(eventually([&] { return pool.stats().workers_alive == 1; }));
  // A backlog that adapt would grow on leaves the fixed count alone.
  std::atomic<std::size_t> most_alive{0};
  scale::Iterator<int> items(iota(30), pool);
  scale::RunOptions options;
  options.chunk_size = 1;
  auto done = items.map(
      [&](int x) {
        most_alive = std::max(most_alive.load(), pool.stats().workers_alive);
        std::this_thread::sleep_for(1ms);
        return x;
      },
      options);
  REQUIRE(done.get() == iota(30));
  REQUIRE(most_alive.load() == 1);
  REQUIRE(pool.stats().workers_target == 1);
}

TEST_CASE("an invalid scaling policy throws invalid_argument naming the field and leaves the pool as it was",
          "[thread_pool][adapt]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  auto refused = [&](scale::ScalingPolicy policy) -> std::string {
    try {
      pool.adapt(policy);
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
    return "accepted";
  };
  REQUIRE(refused({.min = 3, .max = 2}).find("min") != std::string::npos);
  REQUIRE(refused({.min = 0, .max = 4, .backlog_per_worker = 0}).find("backlog_per_worker") != std::string::npos);
  REQUIRE(refused({.min = 0, .max = 4, .scale_down_after = 0ms}).find("scale_down_after") != std::string::npos);
  REQUIRE(pool.concurrency() == 2);
  REQUIRE(pool.stats().workers_target == 2);
  REQUIRE(pool.stats().workers_alive == 2);
}

TEST_CASE("three levels of nested maps on one ThreadPoolManager(2) complete with the right results",
          "[thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  scale::Iterator<int> outer(iota(8), pool);
  const std::vector<long> sums =
      outer
          .map([&](int a) {
            scale::Iterator<int> middle(iota(10), pool);
            const std::vector<long> parts =
                middle
                    .map([&, a](int b) {
                      scale::Iterator<int> inner(iota(5), pool);
                      const std::vector<long> leaves =
                          inner.map([a, b](int c) { return static_cast<long>(a * 100 + b * 10 + c); }).get();
                      return std::accumulate(leaves.begin(), leaves.end(), 0L);
                    })
                    .get();
            return std::accumulate(parts.begin(), parts.end(), 0L);
          })
          .get();
  REQUIRE(sums.size() == 8);
  for (int a = 0; a < 8; ++a) {
    long expected = 0;
    for (int b = 0; b < 10; ++b)
      for (int c = 0; c < 5; ++c) expected += a * 100 + b * 10 + c;
    REQUIRE(sums[static_cast<std::size_t>(a)] == expected);
  }
}

TEST_CASE("a map of 8 items each mapping 100 items on the same ThreadPoolManager(2) completes",
          "[thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  scale::Iterator<int> outer(iota(8), pool);
  const std::vector<int> sums = outer
                                    .map([&](int a) {
                                      scale::Iterator<int> inner(iota(100), pool);
                                      const std::vector<int> values = inner.map([a](int b) { return a + b; }).get();
                                      return std::accumulate(values.begin(), values.end(), 0);
                                    })
                                    .get();
  for (int a = 0; a < 8; ++a) REQUIRE(sums[static_cast<std::size_t>(a)] == 100 * a + 4950);
}

namespace {
thread_local bool t_in_outer_item = false;
}

TEST_CASE("a thread waiting on a nested map runs that map's chunks, never another outer item",
          "[thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  std::atomic<int> outer_on_top_of_outer{0};
  std::atomic<int> inner_run_by_waiting_thread{0};
  scale::Iterator<int> outer(iota(8), pool);
  scale::RunOptions one;
  one.chunk_size = 1;
  const std::vector<int> sums = outer
                                    .map(
                                        [&](int a) {
                                          if (t_in_outer_item) ++outer_on_top_of_outer;
                                          t_in_outer_item = true;
                                          scale::Iterator<int> inner(iota(40), pool);
                                          const std::vector<int> values = inner
                                                                              .map(
                                                                                  [&, a](int b) {
                                                                                    if (t_in_outer_item)
                                                                                      ++inner_run_by_waiting_thread;
                                                                                    return a * b;
                                                                                  },
                                                                                  one)
                                                                              .get();
                                          t_in_outer_item = false;
                                          return std::accumulate(values.begin(), values.end(), 0);
                                        },
                                        one)
                                    .get();
  for (int a = 0; a < 8; ++a) REQUIRE(sums[static_cast<std::size_t>(a)] == a * 780);
  REQUIRE(outer_on_top_of_outer.load() == 0);
  // While both threads sit in outer items, only they can run the nested chunks.
  REQUIRE(inner_run_by_waiting_thread.load() > 0);
}

TEST_CASE("a nested map on another ThreadPoolManager from a pool thread completes", "[thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager first(2);
  scale::ThreadPoolManager second(2);
  scale::Iterator<int> outer(iota(8), first);
  const std::vector<int> sums = outer
                                    .map([&](int a) {
                                      scale::Iterator<int> inner(iota(20), second);
                                      const std::vector<int> values = inner.map([a](int b) { return a + b; }).get();
                                      return std::accumulate(values.begin(), values.end(), 0);
                                    })
                                    .get();
  for (int a = 0; a < 8; ++a) REQUIRE(sums[static_cast<std::size_t>(a)] == 20 * a + 190);
  REQUIRE(second.stats().tasks_done > 0);
}

TEST_CASE("a nested map that goes back to the first one-thread pool through a second one completes",
          "[thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager first(1);
  scale::ThreadPoolManager second(1);
  scale::Iterator<int> outer(iota(4), first);
  const std::vector<int> sums = outer
                                    .map([&](int a) {
                                      scale::Iterator<int> middle(iota(3), second);
                                      const std::vector<int> parts =
                                          middle
                                              .map([&, a](int b) {
                                                // Back on `first`, whose only thread waits in the outer item: it runs
                                                // these.
                                                scale::Iterator<int> inner(iota(3), first);
                                                const std::vector<int> leaves =
                                                    inner.map([a, b](int c) { return a * 100 + b * 10 + c; }).get();
                                                return std::accumulate(leaves.begin(), leaves.end(), 0);
                                              })
                                              .get();
                                      return std::accumulate(parts.begin(), parts.end(), 0);
                                    })
                                    .get();
  for (int a = 0; a < 4; ++a) REQUIRE(sums[static_cast<std::size_t>(a)] == 900 * a + 90 + 9);
}

TEST_CASE("nested filter, reduce and for_each on the same ThreadPoolManager(2) complete", "[thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  std::atomic<int> visited{0};
  scale::Iterator<int> outer(iota(6), pool);
  const std::vector<int> checks = outer
                                      .map([&](int a) {
                                        scale::Iterator<int> inner(iota(50), pool);
                                        const std::vector<int> evens =
                                            inner.filter([](int x) { return x % 2 == 0; }).get();
                                        const int sum = inner.reduce([](int acc, int x) { return acc + x; }, 0).get();
                                        inner.for_each([&](int) { ++visited; }).get();
                                        (void)a;
                                        return static_cast<int>(evens.size()) * 10000 + sum;
                                      })
                                      .get();
  for (int value : checks) REQUIRE(value == 25 * 10000 + 1225);
  REQUIRE(visited.load() == 6 * 50);
}

TEST_CASE("two one-thread pools whose threads each wait on a call queued on the other complete",
          "[thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager first(1);
  scale::ThreadPoolManager second(1);
  Gate both_waiting;
  // Each outer item holds its pool's only thread and maps on the other pool; neither nested call
  // is nested in the other pool's chunk, so only a thread started for the starving wait runs it.
  auto cross = [&](scale::ThreadPoolManager& other, int base) {
    return [&other, &both_waiting, base](int a) {
      both_waiting.arrive();
      (void)both_waiting.arrived(2);  // both outer items hold their pools (no REQUIRE off the test thread)
      scale::Iterator<int> inner(iota(10), other);
      const std::vector<int> values = inner.map([base, a](int b) { return base + a + b; }).get();
      return std::accumulate(values.begin(), values.end(), 0);
    };
  };
  scale::Iterator<int> on_first(iota(1), first);
  scale::Iterator<int> on_second(iota(1), second);
  auto x = on_first.map(cross(second, 1000));
  auto y = on_second.map(cross(first, 2000));
  REQUIRE(x.get() == std::vector<int>{10 * 1000 + 45});
  REQUIRE(y.get() == std::vector<int>{10 * 2000 + 45});
  // Each pool's one thread, and one more started in at least one of them while its thread waited
  // (once one pool's extra thread has run the other's nested call, that pool's thread is free).
  REQUIRE(first.stats().workers_spawned + second.stats().workers_spawned >= 3);
  // The extra threads retire once idle, back to the fixed count.
  REQUIRE(eventually([&] { return first.stats().workers_alive == 1 && second.stats().workers_alive == 1; }));
}

TEST_CASE("a Future-returning function that maps on its own one-thread pool after a co_await completes",
          "[thread_pool][nested]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(1);
  scale::Iterator<int> outer(iota(3), pool);
  // After the co_await the coroutine runs on the loop, so the nested map is made there, outside
  // any pool chunk, while the pool's only thread waits in get() on the coroutine's Future.
  auto fn = [&pool](int a) -> scale::Future<int> {
    scale::Future<void> pause = scale::sleep_for(1ms);
    co_await std::move(pause);
    scale::Iterator<int> inner(iota(10), pool);
    scale::Future<std::vector<int>> nested = inner.map([a](int b) { return a * b; });
    const std::vector<int> values = co_await std::move(nested);
    co_return std::accumulate(values.begin(), values.end(), 0);
  };
  REQUIRE(outer.map(fn).get() == std::vector<int>{0, 45, 90});
}
