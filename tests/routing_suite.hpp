#pragma once
// The routing behaviour suite on the managers of one machine (RunOptions::resources and ::labels
// against a manager's provides), written once and run on InlineManager, ThreadPoolManager and
// ProcessPoolManager. Include it after iterator_suite.hpp, having defined SCALE_ROUTING_MANAGERS
// (the manager types to run it on); it builds its managers itself (routing_suite::Factory), each
// offering what the case needs, so the other suites' factories stay as they are:
//
//   #define SCALE_ROUTING_MANAGERS scale::InlineManager, scale::ThreadPoolManager
//   #include "routing_suite.hpp"
//
// Concurrency is counted in the scope (SharedMemory::increment, atomic wherever the function
// runs), and a long chunk ends when the test sets a key, not after a sleep.

#include <scale/error.hpp>
#include <scale/managers/inline.hpp>
#include <scale/managers/process_pool.hpp>
#include <scale/managers/thread_pool.hpp>
#include <scale/provides.hpp>
#include <scale/run_options.hpp>
#include <scale/sleep_for.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/eventually.hpp"

#ifndef SCALE_ROUTING_MANAGERS
#error "define SCALE_ROUTING_MANAGERS (the manager types to run the routing suite on) before including routing_suite.hpp"
#endif

namespace routing_suite {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Makes the suite's managers, each offering `provides` and able to run more chunks at once than
/// the suite's offers allow (4 threads, 3 children; inline interleaves Future-returning chunks).
template <class Manager>
struct Factory;

template <>
struct Factory<scale::InlineManager> {
  static constexpr const char* id = "inline";
  static std::unique_ptr<scale::ScalabilityManager> make(scale::Provides provides) {
    return std::make_unique<scale::InlineManager>(scale::InlineOptions{.provides = std::move(provides)});
  }
};

template <>
struct Factory<scale::ThreadPoolManager> {
  static constexpr const char* id = "thread-pool";
  static std::unique_ptr<scale::ScalabilityManager> make(scale::Provides provides) {
    return std::make_unique<scale::ThreadPoolManager>(4, scale::ThreadPoolOptions{.provides = std::move(provides)});
  }
};

template <>
struct Factory<scale::ProcessPoolManager> {
  static constexpr const char* id = "process-pool";
  // Three children, more than the two gpus the suite offers at most: the offer is the pool's, not
  // each child's.
  static std::unique_ptr<scale::ScalabilityManager> make(scale::Provides provides) {
    return std::make_unique<scale::ProcessPoolManager>(
        scale::ProcessPoolOptions{.max_workers = 3, .min_workers = 1, .provides = std::move(provides)});
  }
};

inline const scale::Provides one_gpu{{"gpu", "1"}, {"site", "test"}};
inline const scale::Provides two_gpus{{"gpu", "2"}, {"site", "test"}};

/// Counts itself in "ran".
inline constexpr auto counted = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<std::int64_t> ran = scope.increment("ran");
  co_await std::move(ran);
  co_return x;
};

/// Counts the items running at once in "running", and in "above_one" / "above_two" each time it
/// starts with more than one / two running (itself included); "ran" counts the items.
inline constexpr auto concurrent = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<std::int64_t> started = scope.increment("running");
  const std::int64_t running = co_await std::move(started);
  if (running > 1) {
    scale::Future<std::int64_t> seen = scope.increment("above_one");
    co_await std::move(seen);
  }
  if (running > 2) {
    scale::Future<std::int64_t> seen = scope.increment("above_two");
    co_await std::move(seen);
  }
  // Long enough for a second chunk to start meanwhile if the manager let it.
  scale::Future<void> pause = scale::sleep_for(20ms);
  co_await std::move(pause);
  scale::Future<std::int64_t> ended = scope.increment("running", -1);
  co_await std::move(ended);
  scale::Future<std::int64_t> ran = scope.increment("ran");
  co_await std::move(ran);
  co_return x;
};

/// Waits (up to 10 s) until two items run at once, then counts as `concurrent` does.
inline constexpr auto meet_another = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<std::int64_t> started = scope.increment("running");
  const std::int64_t running = co_await std::move(started);
  if (running > 2) {
    scale::Future<std::int64_t> seen = scope.increment("above_two");
    co_await std::move(seen);
  }
  for (int i = 0; i < 10'000; ++i) {
    scale::Future<std::int64_t> now = scope.increment("running", 0);
    if (co_await std::move(now) >= 2) {
      scale::Future<std::int64_t> met = scope.increment("met");
      co_await std::move(met);
      break;
    }
    scale::Future<void> pause = scale::sleep_for(1ms);
    co_await std::move(pause);
  }
  // Stay until the other one has seen this one too.
  for (int i = 0; i < 10'000; ++i) {
    scale::Future<std::int64_t> met = scope.increment("met", 0);
    if (co_await std::move(met) >= 2) break;
    scale::Future<void> pause = scale::sleep_for(1ms);
    co_await std::move(pause);
  }
  scale::Future<std::int64_t> ended = scope.increment("running", -1);
  co_await std::move(ended);
  co_return x;
};

/// Marks "long_started", then holds its chunk until the test sets "release" (or 20 s pass, so a
/// broken manager fails the test rather than hanging it); marks "long_done".
inline constexpr auto hold_until_released = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<std::int64_t> started = scope.increment("long_started");
  co_await std::move(started);
  for (int i = 0; i < 20'000; ++i) {
    scale::Future<std::int64_t> released = scope.increment("release", 0);
    if (co_await std::move(released) > 0) break;
    scale::Future<void> pause = scale::sleep_for(1ms);
    co_await std::move(pause);
  }
  scale::Future<std::int64_t> done = scope.increment("long_done");
  co_await std::move(done);
  co_return x;
};

/// Sets "release" when the test case ends, however it ends, so a long chunk never outlives the
/// state it polls. Declare it after the manager and the manager after the memory: the chunk ends,
/// then the manager goes, then the memory.
struct ReleaseOnExit {
  scale::SharedMemory& memory;
  ~ReleaseOnExit() {
    try {
      memory.set("release", 1).get();
    } catch (const std::exception& error) {
      WARN("could not set release: " << error.what());
    }
  }
};

inline std::int64_t value_of(scale::SharedMemory& memory, const std::string& key) {
  auto entry = memory.entry(key).get();
  return entry ? entry->value.get<std::int64_t>() : 0;
}

/// The Unsatisfiable message `call` fails with, and how long it took to fail; an error of any
/// other type fails the test, and no error at all leaves the message empty.
struct Refusal {
  std::string message;
  Clock::duration took;
};
inline Refusal refusal(const std::function<void()>& call) {
  const auto start = Clock::now();
  try {
    call();
  } catch (const scale::Unsatisfiable& error) {
    return Refusal{error.what(), Clock::now() - start};
  }
  return Refusal{"", Clock::now() - start};
}

}  // namespace routing_suite

#define SCALE_ROUTING_TAGS SCALE_ITERATOR_TAGS "[routing]"

TEMPLATE_TEST_CASE("a call asking a non-positive or non-finite amount fails with std::invalid_argument",
                   SCALE_ROUTING_TAGS, SCALE_ROUTING_MANAGERS) {
  using namespace routing_suite;
  scale::Runtime runtime;
  auto manager = Factory<TestType>::make(one_gpu);
  scale::Iterator<int> numbers(iterator_suite::iota(4), *manager);
  for (double amount : {0.0, -1.0, std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    scale::RunOptions options{.resources = {{"gpu", amount}}};
    REQUIRE_THROWS_AS(numbers.map(iterator_suite::twice, options).get(), std::invalid_argument);
  }
  REQUIRE(manager->stats().tasks_done == 0);
}

TEMPLATE_TEST_CASE("a manager refuses provides with a negative or non-finite amount or an empty name",
                   SCALE_ROUTING_TAGS, SCALE_ROUTING_MANAGERS) {
  using namespace routing_suite;
  scale::Runtime runtime;
  REQUIRE_THROWS_AS(Factory<TestType>::make({{"gpu", "-1"}}), std::invalid_argument);
  REQUIRE_THROWS_AS(Factory<TestType>::make({{"gpu", "inf"}}), std::invalid_argument);
  REQUIRE_THROWS_AS(Factory<TestType>::make({{"", "1"}}), std::invalid_argument);
  REQUIRE_THROWS_WITH(Factory<TestType>::make({{"gpu", "-1"}}), Catch::Contains("provides") && Catch::Contains("gpu=-1"));
}

TEMPLATE_TEST_CASE("a call the manager can never meet fails at once with Unsatisfiable naming what was asked and offered",
                   SCALE_ROUTING_TAGS, SCALE_ROUTING_MANAGERS) {
  using namespace routing_suite;
  scale::Runtime runtime;
  auto manager = Factory<TestType>::make(two_gpus);
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  scale::Iterator<int> numbers(iterator_suite::iota(50), *manager);
  numbers.use_scope(memory);

  scale::RunOptions other_site{.labels = {{"site", "eu-1"}}};
  const Refusal label = refusal([&] { numbers.map(counted, other_site).get(); });
  REQUIRE_THAT(label.message, Catch::Contains("{site=eu-1}") && Catch::Contains(Factory<TestType>::id) &&
                                  Catch::Contains("{gpu=2,site=test}"));
  REQUIRE(label.took < 2s);

  scale::RunOptions too_many{.resources = {{"gpu", 3}}, .labels = {{"site", "test"}}};
  const Refusal amount = refusal([&] { numbers.for_each(counted, too_many).get(); });
  REQUIRE_THAT(amount.message, Catch::Contains("{gpu=3,site=test}") && Catch::Contains("{gpu=2,site=test}"));
  REQUIRE(amount.took < 2s);

  scale::RunOptions unknown{.resources = {{"tpu", 1}}};
  REQUIRE_THAT(refusal([&] { numbers.map(counted, unknown).get(); }).message, Catch::Contains("{tpu=1}"));
  // A label asked as an amount, and an amount as a label, are mismatches too.
  scale::RunOptions site_amount{.resources = {{"site", 1}}};
  REQUIRE_FALSE(refusal([&] { numbers.map(counted, site_amount).get(); }).message.empty());
  scale::RunOptions gpu_label{.labels = {{"gpu", "2"}}};
  REQUIRE(numbers.map(counted, gpu_label).get().size() == 50);  // "2" is the text it offers: a match
  scale::RunOptions gpu_other_label{.labels = {{"gpu", "two"}}};
  REQUIRE_FALSE(refusal([&] { numbers.map(counted, gpu_other_label).get(); }).message.empty());

  // None of the refused calls ran anything: only the one that matched did.
  REQUIRE(value_of(memory, "ran") == 50);
  REQUIRE(manager->stats().tasks_running == 0);

  // A manager that offers nothing refuses any requirement, and says so.
  auto offers_nothing = Factory<TestType>::make({});
  scale::Iterator<int> elsewhere(iterator_suite::iota(4), *offers_nothing);
  scale::RunOptions one_gpu_asked{.resources = {{"gpu", 1}}};
  REQUIRE_THAT(refusal([&] { elsewhere.map(iterator_suite::twice, one_gpu_asked).get(); }).message,
               Catch::Contains("{gpu=1}") && Catch::Contains(std::string(Factory<TestType>::id) + " {}"));
}

TEMPLATE_TEST_CASE("with gpu=1 offered, chunks that each need gpu=1 never run two at once, and all complete",
                   SCALE_ROUTING_TAGS, SCALE_ROUTING_MANAGERS) {
  using namespace routing_suite;
  scale::Runtime runtime;
  auto manager = Factory<TestType>::make(one_gpu);
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  scale::Iterator<int> numbers(iterator_suite::iota(6), *manager);
  numbers.use_scope(memory);
  scale::RunOptions options{.chunk_size = 1, .resources = {{"gpu", 1}}, .labels = {{"site", "test"}}};
  REQUIRE(numbers.map(concurrent, options).get() == iterator_suite::iota(6));
  REQUIRE(value_of(memory, "ran") == 6);
  REQUIRE(value_of(memory, "above_one") == 0);
  REQUIRE(value_of(memory, "running") == 0);
  const auto stats = manager->stats();
  REQUIRE(stats.tasks_running == 0);
  REQUIRE(stats.tasks_queued == 0);
  // The amount came back each time: the next call gets it at once.
  REQUIRE(numbers.map(concurrent, options).get() == iterator_suite::iota(6));
  REQUIRE(value_of(memory, "above_one") == 0);
}

TEMPLATE_TEST_CASE("with gpu=2 offered, two chunks that need gpu=1 run at once and never three",
                   SCALE_ROUTING_TAGS, SCALE_ROUTING_MANAGERS) {
  using namespace routing_suite;
  scale::Runtime runtime;
  auto manager = Factory<TestType>::make(two_gpus);
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  scale::Iterator<int> pair(iterator_suite::iota(2), *manager);
  pair.use_scope(memory);
  scale::RunOptions options{.chunk_size = 1, .resources = {{"gpu", 1}}};
  // Each item waits until another runs beside it: they can only finish together.
  REQUIRE(pair.map(meet_another, options).get() == iterator_suite::iota(2));
  REQUIRE(value_of(memory, "met") == 2);

  scale::Iterator<int> numbers(iterator_suite::iota(8), *manager);
  numbers.use_scope(memory);
  REQUIRE(numbers.map(concurrent, options).get() == iterator_suite::iota(8));
  REQUIRE(value_of(memory, "above_two") == 0);
  // One chunk needing both gpus runs alone.
  scale::RunOptions both{.chunk_size = 1, .resources = {{"gpu", 2}}};
  memory.set("running", 0).get();
  memory.set("above_one", 0).get();
  REQUIRE(numbers.map(concurrent, both).get() == iterator_suite::iota(8));
  REQUIRE(value_of(memory, "above_one") == 0);
}

TEMPLATE_TEST_CASE("a long chunk holding the only gpu holds up no call that needs nothing, and the next gpu call waits for it",
                   SCALE_ROUTING_TAGS, SCALE_ROUTING_MANAGERS) {
  using namespace routing_suite;
  scale::Runtime runtime;
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  auto manager = Factory<TestType>::make(one_gpu);
  ReleaseOnExit release{memory};
  scale::Iterator<int> one(iterator_suite::iota(1), *manager);
  one.use_scope(memory);
  scale::RunOptions gpu{.chunk_size = 1, .resources = {{"gpu", 1}}};

  scale::Future<std::vector<int>> holding = one.map(hold_until_released, gpu);
  REQUIRE(support::eventually([&] { return value_of(memory, "long_started") == 1; }));
  scale::Future<std::vector<int>> waiting = one.map(counted, gpu);  // counts in "ran"

  // Meanwhile, calls that need nothing, or only a label, complete on the others.
  scale::Iterator<int> numbers(iterator_suite::iota(200), *manager);
  scale::RunOptions small{.chunk_size = 5};
  REQUIRE(numbers.map(iterator_suite::twice, small).get().size() == 200);
  scale::RunOptions labelled{.chunk_size = 5, .labels = {{"site", "test"}}};
  REQUIRE(numbers.map(iterator_suite::twice, labelled).get().size() == 200);
  REQUIRE(value_of(memory, "long_done") == 0);  // the long chunk still holds the gpu
  REQUIRE(value_of(memory, "ran") == 0);        // and the gpu call waits for it

  memory.set("release", 1).get();
  REQUIRE(holding.get() == std::vector<int>{0});
  REQUIRE(waiting.get() == std::vector<int>{0});
  REQUIRE(value_of(memory, "ran") == 1);
  REQUIRE(manager->stats().tasks_queued == 0);
}

TEMPLATE_TEST_CASE("a stopped call that waits for a held amount fails with Cancelled without waiting for it",
                   SCALE_ROUTING_TAGS, SCALE_ROUTING_MANAGERS) {
  using namespace routing_suite;
  scale::Runtime runtime;
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  auto manager = Factory<TestType>::make(one_gpu);
  ReleaseOnExit release{memory};
  scale::Iterator<int> one(iterator_suite::iota(1), *manager);
  one.use_scope(memory);
  scale::RunOptions gpu{.chunk_size = 1, .resources = {{"gpu", 1}}};
  scale::Future<std::vector<int>> holding = one.map(hold_until_released, gpu);
  REQUIRE(support::eventually([&] { return value_of(memory, "long_started") == 1; }));

  std::stop_source source;
  scale::Iterator<int> numbers(iterator_suite::iota(4), *manager);
  numbers.use_scope(memory);
  scale::RunOptions stoppable{.chunk_size = 1, .stop = source.get_token(), .resources = {{"gpu", 1}}};
  scale::Future<std::vector<int>> waiting = numbers.map(counted, stoppable);
  source.request_stop();
  REQUIRE_THROWS_AS(waiting.get(), scale::Cancelled);
  REQUIRE(value_of(memory, "long_done") == 0);  // it did not wait for the holder
  REQUIRE(value_of(memory, "ran") == 0);

  memory.set("release", 1).get();
  REQUIRE(holding.get() == std::vector<int>{0});
  // What the stopped call never took is free: a new gpu call runs.
  REQUIRE(numbers.map(counted, gpu).get() == iterator_suite::iota(4));
}

TEMPLATE_TEST_CASE("a manager offering nothing runs calls without requirements as before", SCALE_ROUTING_TAGS,
                   SCALE_ROUTING_MANAGERS) {
  using namespace routing_suite;
  scale::Runtime runtime;
  auto manager = Factory<TestType>::make({});
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  scale::Iterator<int> numbers(iterator_suite::iota(1'000), *manager);
  numbers.use_scope(memory);
  const std::vector<int> doubled = numbers.map(iterator_suite::twice).get();
  REQUIRE(doubled.size() == 1'000);
  for (int i = 0; i < 1'000; ++i) REQUIRE(doubled[static_cast<std::size_t>(i)] == 2 * i);
  numbers.for_each(counted).get();
  REQUIRE(value_of(memory, "ran") == 1'000);
  const auto stats = manager->stats();
  REQUIRE(stats.tasks_failed == 0);
  REQUIRE(stats.tasks_running == 0);
  REQUIRE(stats.tasks_queued == 0);
  REQUIRE(stats.tasks_done >= 2);
}
