#include <catch2/catch.hpp>

#include <scale/detail/loop.hpp>
#include <scale/future.hpp>
#include <scale/runtime.hpp>
#include <scale/sleep_for.hpp>
#include <scale/when_all.hpp>
#include <scale/when_any.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

struct Custom : std::runtime_error {
  using std::runtime_error::runtime_error;
};

scale::Future<int> immediate(int value) { co_return value; }

scale::Future<int> after(std::chrono::milliseconds delay, int value) {
  co_await scale::sleep_for(delay);
  co_return value;
}

scale::Future<int> throws_after(std::chrono::milliseconds delay) {
  co_await scale::sleep_for(delay);
  throw Custom("custom failure");
}

}  // namespace

TEST_CASE("a coroutine's value reaches co_await, then and get", "[future]") {
  scale::Runtime runtime;
  int total = runtime.run([]() -> scale::Future<int> {
    int a = co_await immediate(2);
    int b = co_await after(5ms, 3);
    co_return a + b;
  });
  REQUIRE(total == 5);
  REQUIRE(after(1ms, 7).get() == 7);
  REQUIRE(after(1ms, 7).then([](int v) { return v * 2; }).get() == 14);
}

TEST_CASE("exceptions pass through co_await, then and get unchanged", "[future]") {
  scale::Runtime runtime;
  REQUIRE_THROWS_AS(throws_after(1ms).get(), Custom);
  REQUIRE_THROWS_WITH(throws_after(1ms).then([](int v) { return v + 1; }).get(), "custom failure");
  bool caught = runtime.run([]() -> scale::Future<bool> {
    try {
      co_await throws_after(1ms);
    } catch (const Custom& error) {
      co_return std::string(error.what()) == "custom failure";
    }
    co_return false;
  });
  REQUIRE(caught);
}

TEST_CASE("then takes the value or nothing, flattens Futures, and runs on the loop", "[future]") {
  scale::Runtime runtime;
  std::atomic<bool> on_loop{false};
  int value = immediate(1)
                  .then([&](int v) {
                    on_loop = scale::detail::on_loop_thread();
                    return v + 1;
                  })
                  .then([] { return after(1ms, 10); })
                  .then([](int v) { return std::to_string(v); })
                  .then([](std::string s) { return static_cast<int>(s.size()); })
                  .get();
  REQUIRE(value == 2);
  REQUIRE(on_loop);
  int calls = 0;
  scale::make_ready_future().then([&] { ++calls; }).then([&] { return scale::make_ready_future(); }).get();
  REQUIRE(calls == 1);
}

TEST_CASE("then on a ready Future on the loop runs fn at once: values, errors, throws and Futures as ever",
          "[future]") {
  scale::Runtime runtime;
  const bool all = runtime.run([]() -> scale::Future<bool> {
    bool ok = true;
    int calls = 0;
    scale::Future<int> doubled = scale::make_ready_future(21).then([&](int v) {
      ++calls;
      return v * 2;
    });
    ok = ok && calls == 1 && doubled.ready();
    const int doubled_value = co_await std::move(doubled);
    ok = ok && doubled_value == 42;

    scale::Future<int> skipped =
        scale::make_failed_future<int>(std::make_exception_ptr(Custom("before"))).then([&](int v) {
          ++calls;
          return v;
        });
    try {
      (void)co_await std::move(skipped);
      ok = false;
    } catch (const Custom& error) {
      ok = ok && std::string(error.what()) == "before" && calls == 1;
    }

    scale::Future<int> thrown = scale::make_ready_future(1).then([](int) -> int { throw Custom("inside"); });
    try {
      (void)co_await std::move(thrown);
      ok = false;
    } catch (const Custom& error) {
      ok = ok && std::string(error.what()) == "inside";
    }

    scale::Future<int> flattened = scale::make_ready_future(5).then([](int v) { return after(1ms, v + 1); });
    const int flattened_value = co_await std::move(flattened);
    ok = ok && flattened_value == 6;

    scale::Future<void> nothing = scale::make_ready_future().then([&] { ++calls; });
    co_await std::move(nothing);
    ok = ok && calls == 2;

    scale::Future<int> consumed = scale::make_ready_future(1);
    (void)co_await std::move(consumed);
    try {
      (void)co_await std::move(consumed).then([](int v) { return v; });
      ok = false;
    } catch (const std::logic_error&) {
    }
    co_return ok;
  });
  REQUIRE(all);
}

TEST_CASE("get on the loop thread throws logic_error instead of deadlocking", "[future]") {
  scale::Runtime runtime;
  bool threw = runtime.run([]() -> scale::Future<bool> {
    try {
      (void)after(1ms, 1).get();
    } catch (const std::logic_error& error) {
      co_return std::string(error.what()).find("co_await") != std::string::npos;
    }
    co_return false;
  });
  REQUIRE(threw);
}

TEST_CASE("move-only values travel through co_await, then and get", "[future]") {
  scale::Runtime runtime;
  auto make = []() -> scale::Future<std::unique_ptr<int>> {
    co_await scale::sleep_for(1ms);
    co_return std::make_unique<int>(42);
  };
  REQUIRE(*make().get() == 42);
  REQUIRE(make().then([](std::unique_ptr<int> p) { return *p + 1; }).get() == 43);
}

TEST_CASE("a Future consumed twice is a logic_error", "[future]") {
  scale::Runtime runtime;
  auto f = immediate(3);
  REQUIRE(f.get() == 3);
  REQUIRE_THROWS_AS(f.get(), std::logic_error);
}

TEST_CASE("when_all gathers values in order and fails with the first error", "[future]") {
  scale::Runtime runtime;
  std::vector<scale::Future<int>> fs;
  fs.push_back(after(20ms, 1));
  fs.push_back(after(1ms, 2));
  fs.push_back(immediate(3));
  REQUIRE(scale::when_all(std::move(fs)).get() == std::vector<int>{1, 2, 3});

  auto tuple = scale::when_all(after(2ms, 1), scale::make_ready_future(), immediate(5)).get();
  REQUIRE(std::get<0>(tuple) == 1);
  REQUIRE(std::get<2>(tuple) == 5);

  std::vector<scale::Future<int>> failing;
  failing.push_back(after(10s, 1));  // never needed: the error arrives first
  failing.push_back(throws_after(1ms));
  auto started = std::chrono::steady_clock::now();
  REQUIRE_THROWS_AS(scale::when_all(std::move(failing)).get(), Custom);
  REQUIRE(std::chrono::steady_clock::now() - started < 5s);

  REQUIRE(scale::when_all(std::vector<scale::Future<int>>{}).get().empty());
  std::vector<scale::Future<void>> voids;
  voids.push_back(scale::sleep_for(1ms));
  voids.push_back(scale::make_ready_future());
  scale::when_all(std::move(voids)).get();
}

TEST_CASE("when_any completes with the first to finish", "[future]") {
  scale::Runtime runtime;
  std::vector<scale::Future<int>> fs;
  fs.push_back(after(5s, 1));
  fs.push_back(after(1ms, 2));
  auto [index, value] = scale::when_any(std::move(fs)).get();
  REQUIRE(index == 1);
  REQUIRE(value == 2);

  auto variant = scale::when_any(after(5s, 1), scale::sleep_for(1ms)).get();
  REQUIRE(variant.index() == 1);
  REQUIRE_THROWS_AS(scale::when_any(std::vector<scale::Future<int>>{}).get(), std::invalid_argument);
  REQUIRE_THROWS_AS(scale::when_any(throws_after(1ms), after(5s, 1)).get(), Custom);
}

TEST_CASE("sleep_for waits at least its duration", "[future]") {
  scale::Runtime runtime;
  auto started = std::chrono::steady_clock::now();
  scale::sleep_for(30ms).get();
  REQUIRE(std::chrono::steady_clock::now() - started >= 30ms);
}

TEST_CASE("ten million immediately-ready awaits do not grow the stack", "[future]") {
  scale::Runtime runtime;
  std::int64_t sum = runtime.run([]() -> scale::Future<std::int64_t> {
    std::int64_t total = 0;
    for (int i = 0; i < 10'000'000; ++i) total += co_await scale::make_ready_future(1);
    for (int i = 0; i < 1'000'000; ++i) total += co_await immediate(1);
    co_return total;
  });
  REQUIRE(sum == 11'000'000);
}

TEST_CASE("a long chain of suspended awaits resumes without growing the stack", "[future]") {
  scale::Runtime runtime;
  // 100,000 coroutines, each awaiting the one before; the first completes last, so they all
  // resume one after another. Resumption goes through the loop, never nested.
  struct Chain {
    static scale::Future<int> add_one(scale::Future<int> previous) { co_return 1 + co_await previous; }
  };
  scale::Promise<int> first;
  scale::Future<int> last = first.get_future();
  for (int i = 0; i < 100'000; ++i) last = Chain::add_one(std::move(last));
  first.set_value(0);
  REQUIRE(last.get() == 100'000);
}

TEST_CASE("destroying the Runtime fails pending Futures with Stopped and wakes get()", "[future]") {
  auto runtime = std::make_unique<scale::Runtime>();
  auto pending = after(std::chrono::hours(1), 1);
  std::atomic<int> outcome{0};
  std::thread waiter([&] {
    try {
      (void)after(std::chrono::hours(1), 2).get();
      outcome = 1;
    } catch (const scale::Stopped&) {
      outcome = 2;
    }
  });
  std::this_thread::sleep_for(20ms);
  runtime.reset();
  waiter.join();
  REQUIRE(outcome == 2);
  REQUIRE_THROWS_AS(pending.get(), scale::Stopped);
}

TEST_CASE("a Promise nobody waited on is Stopped by a Runtime shutdown when next polled, completed or awaited",
          "[future]") {
  // None of these Promises is waited on before the shutdown, so none is in the shutdown registry
  // then; each still ends as if the shutdown had failed it.
  auto runtime = std::make_unique<scale::Runtime>();
  scale::Promise<int> polled, completed, awaited_later, abandoned;
  scale::Future<int> polled_future = polled.get_future();
  scale::Future<int> completed_future = completed.get_future();
  scale::Future<int> awaited_future = awaited_later.get_future();
  scale::Future<int> abandoned_future = abandoned.get_future();
  scale::Promise<int> delivered;
  scale::Future<int> delivered_future = delivered.get_future();
  REQUIRE(delivered.set_value(5));  // completed before the shutdown: it keeps its value
  REQUIRE_FALSE(polled.ready());
  runtime.reset();

  REQUIRE(polled_future.ready());
  REQUIRE(polled.ready());
  REQUIRE_THROWS_AS(polled_future.get(), scale::Stopped);
  REQUIRE_FALSE(completed.set_value(1));  // the shutdown came first
  REQUIRE_THROWS_AS(completed_future.get(), scale::Stopped);
  { auto gone = std::move(abandoned); }  // not BrokenPromise: the shutdown came first
  REQUIRE_THROWS_AS(abandoned_future.get(), scale::Stopped);
  REQUIRE(delivered_future.get() == 5);

  // Awaited on the next Runtime's loop: Stopped at once, not a wait for a producer that is gone.
  scale::Runtime next;
  const bool stopped = next.run([&]() -> scale::Future<bool> {
    try {
      (void)co_await std::move(awaited_future);
    } catch (const scale::Stopped&) {
      co_return true;
    }
    co_return false;
  });
  REQUIRE(stopped);
  // A Promise made under the next Runtime is not touched by the earlier shutdown.
  scale::Promise<int> fresh;
  scale::Future<int> fresh_future = fresh.get_future();
  REQUIRE_FALSE(fresh_future.ready());
  REQUIRE(fresh.set_value(3));
  REQUIRE(fresh_future.get() == 3);
}

TEST_CASE("a Promise dropped without a value fails its Future with BrokenPromise", "[future]") {
  scale::Runtime runtime;
  scale::Future<int> f;
  {
    scale::Promise<int> promise;
    f = promise.get_future();
  }
  REQUIRE_THROWS_AS(f.get(), scale::BrokenPromise);
}

TEST_CASE("a Promise completed from another thread resumes its awaiter on the loop", "[future]") {
  scale::Runtime runtime;
  bool resumed_on_loop = runtime.run([]() -> scale::Future<bool> {
    scale::Promise<int> promise;
    auto f = promise.get_future();
    std::thread producer([p = std::move(promise)]() mutable {
      std::this_thread::sleep_for(5ms);
      p.set_value(9);
    });
    producer.detach();
    int v = co_await f;
    co_return v == 9 && scale::detail::on_loop_thread();
  });
  REQUIRE(resumed_on_loop);
}

namespace {
scale::detail::Detached await_where_completed(scale::Future<int> future, std::atomic<int>& value,
                                              std::atomic<std::thread::id>& where) {
  value = co_await scale::detail::resume_where_completed(std::move(future));
  where = std::this_thread::get_id();
}
}  // namespace

TEST_CASE("resume_where_completed resumes on the completing thread while the loop is busy", "[future]") {
  // Declared before the Runtime, so they outlive the loop callback that reads them.
  std::atomic<bool> release_loop{false}, loop_blocked{false};
  scale::Runtime runtime;
  scale::detail::post([&] {
    loop_blocked = true;
    while (!release_loop) std::this_thread::sleep_for(1ms);
  });
  while (!loop_blocked) std::this_thread::sleep_for(1ms);
  scale::Promise<int> promise;
  std::atomic<int> value{0};
  std::atomic<std::thread::id> where{};
  await_where_completed(promise.get_future(), value, where);
  std::thread::id producer_id;
  std::thread producer([&] {
    producer_id = std::this_thread::get_id();
    promise.set_value(7);
  });
  producer.join();
  REQUIRE(value == 7);  // already resumed, though the loop is still blocked
  REQUIRE(where.load() == producer_id);
  release_loop = true;
}

TEST_CASE("get() on many threads wakes each once its Promise completes on another thread", "[future]") {
  scale::Runtime runtime;
  constexpr int kThreads = 4, kEach = 2000;
  std::atomic<long> sum{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        scale::Promise<int> promise;
        auto future = promise.get_future();
        std::thread producer([&promise, value = t * kEach + i] { promise.set_value(value); });
        sum += future.get();  // blocks (or finds it done): both orders happen in this loop
        producer.join();
      }
    });
  for (auto& thread : threads) thread.join();
  const long n = kThreads * kEach;
  REQUIRE(sum == n * (n - 1) / 2);
}

TEST_CASE("a Promise raced by its producer and Runtime shutdown completes exactly once", "[future]") {
  for (int round = 0; round < 20; ++round) {
    auto runtime = std::make_unique<scale::Runtime>();
    constexpr int kPromises = 500;
    std::vector<scale::Promise<int>> promises(kPromises);
    std::vector<scale::Future<int>> futures;
    for (auto& promise : promises) futures.push_back(promise.get_future());
    std::atomic<int> took_effect{0};
    std::thread producer([&] {
      for (auto& promise : promises)
        if (promise.set_value(1)) ++took_effect;
    });
    runtime.reset();  // fails with Stopped whatever the producer has not completed yet
    producer.join();
    int values = 0, stopped = 0;
    for (auto& future : futures) {
      try {
        values += future.get();
      } catch (const scale::Stopped&) {
        ++stopped;
      }
    }
    REQUIRE(values == took_effect.load());
    REQUIRE(values + stopped == kPromises);
  }
}

TEST_CASE("Promises made and completed on several threads at once are all stopped or delivered", "[future]") {
  auto runtime = std::make_unique<scale::Runtime>();
  constexpr int kThreads = 4, kEach = 5000;
  std::vector<std::vector<scale::Promise<int>>> kept(kThreads);  // left pending for shutdown to stop
  std::vector<std::vector<scale::Future<int>>> pending(kThreads);
  std::atomic<int> delivered{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        scale::Promise<int> promise;
        if (i % 2 == 0) {
          auto future = promise.get_future();
          promise.set_value(i);
          if (future.get() == i) ++delivered;
        } else {
          pending[t].push_back(promise.get_future());
          kept[t].push_back(std::move(promise));
        }
      }
    });
  for (auto& thread : threads) thread.join();
  REQUIRE(delivered == kThreads * kEach / 2);
  runtime.reset();
  int stopped = 0;
  for (auto& futures : pending)
    for (auto& future : futures) {
      try {
        (void)future.get();
      } catch (const scale::Stopped&) {
        ++stopped;
      }
    }
  REQUIRE(stopped == kThreads * kEach / 2);
}

namespace {
struct ThrowsOnCopy {
  ThrowsOnCopy() = default;
  ThrowsOnCopy(const ThrowsOnCopy&) { throw Custom("copy failed"); }
};
}  // namespace

TEST_CASE("a value whose construction throws fails the Future with that error", "[future]") {
  scale::Runtime runtime;
  scale::Promise<ThrowsOnCopy> promise;
  auto future = promise.get_future();
  const ThrowsOnCopy original;
  REQUIRE_THROWS_AS(promise.set_value(original), Custom);
  REQUIRE(promise.ready());
  REQUIRE_FALSE(promise.set_value());  // already complete: ignored
  REQUIRE_THROWS_AS(future.get(), Custom);
}
