#pragma once
// The control behaviour suite (stop, progress), written once and run on every manager: include it
// after iterator_suite.hpp, which defines the factories, tags and helpers it uses.
//
// Stops are requested from the progress callbacks, which run on the loop as the call moves, so
// every test synchronises on the call's own events rather than on sleeps.

#include <scale/error.hpp>
#include <scale/progress.hpp>
#include <scale/run_options.hpp>
#include <scale/sleep_for.hpp>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <stop_token>
#include <vector>

#include "support/progress_seen.hpp"

namespace control_suite {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// An item of about 1 ms, counted in the scope as it starts.
inline constexpr auto slow_counted = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<std::int64_t> counted = scope.increment("started");
  co_await std::move(counted);
  scale::Future<void> pause = scale::sleep_for(1ms);
  co_await std::move(pause);
  co_return x;
};

/// Reports that it runs, then waits (up to 20 s) for its call to be stopped; counts what it saw.
inline constexpr auto wait_for_stop = [](int, scale::Scope& scope) -> scale::Future<int> {
  scope.progress(0.5);
  for (int i = 0; i < 20'000 && !scope.stop_requested(); ++i) {
    scale::Future<void> pause = scale::sleep_for(1ms);
    co_await std::move(pause);
  }
  if (scope.stop_requested()) {
    scale::Future<std::int64_t> counted = scope.increment("saw_stop");
    co_await std::move(counted);
  }
  co_return 0;
};

inline int bad_progress_values(int x, scale::Scope& scope) {
  scope.progress(-1);
  scope.progress(2);
  scope.progress(std::numeric_limits<double>::quiet_NaN());
  scope.progress(std::numeric_limits<double>::infinity());
  return x;
}

inline std::int64_t counted(scale::SharedMemory& memory, const std::string& key) {
  auto entry = memory.entry(key).get();
  return entry ? entry->value.get<std::int64_t>() : 0;
}

}  // namespace control_suite

TEMPLATE_TEST_CASE("a stop token already stopped fails the call at once with Cancelled and runs nothing",
                   SCALE_ITERATOR_TAGS, SCALE_ITERATOR_FACTORIES) {
  using namespace control_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  scale::Iterator<int> numbers(iterator_suite::iota(100), *manager);
  numbers.use_scope(memory);
  std::stop_source source;
  source.request_stop();
  const auto before = manager->stats();
  scale::RunOptions options{.stop = source.get_token()};
  REQUIRE_THROWS_AS(numbers.map(slow_counted, options).get(), scale::Cancelled);
  REQUIRE_THROWS_AS(numbers.for_each(slow_counted, options).get(), scale::Cancelled);
  REQUIRE(counted(memory, "started") == 0);
  const auto after = manager->stats();
  REQUIRE(after.tasks_done == before.tasks_done);
  REQUIRE(after.tasks_running == 0);
}

TEMPLATE_TEST_CASE("a stop mid-map fails with Cancelled long before the items would finish, and nothing starts after",
                   SCALE_ITERATOR_TAGS, SCALE_ITERATOR_FACTORIES) {
  using namespace control_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  constexpr int items = 10'000;
  scale::Iterator<int> numbers(iterator_suite::iota(items), *manager);
  numbers.use_scope(memory);
  std::stop_source source;
  scale::RunOptions options{.progress = [&](std::size_t done, std::size_t) {
                              if (done > 0) source.request_stop();
                            },
                            .stop = source.get_token()};
  const auto start = Clock::now();
  REQUIRE_THROWS_AS(numbers.map(slow_counted, options).get(), scale::Cancelled);
  const auto took = Clock::now() - start;
  // 10,000 items of 1 ms over the manager's workers would take this long at best.
  const auto all_items = std::chrono::milliseconds(items) / std::max<std::size_t>(1, manager->concurrency());
  REQUIRE(took < all_items / 2);
  const std::int64_t started = counted(memory, "started");
  REQUIRE(started > 0);
  REQUIRE(started < items / 2);
  // Nothing of the stopped call runs later: a call after it finishes, and no item more started.
  REQUIRE(numbers.map(iterator_suite::twice).get().size() == static_cast<std::size_t>(items));
  REQUIRE(counted(memory, "started") == started);
  REQUIRE(manager->stats().tasks_running == 0);
}

TEMPLATE_TEST_CASE("a running function sees scope.stop_requested() and the call fails with Cancelled once it returns",
                   SCALE_ITERATOR_TAGS, SCALE_ITERATOR_FACTORIES) {
  using namespace control_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  scale::Iterator<int> numbers(iterator_suite::iota(2), *manager);
  numbers.use_scope(memory);
  std::stop_source source;
  // A grace far longer than the test: the functions must return by themselves, not be killed.
  scale::RunOptions options{.chunk_size = 1,
                            .stop = source.get_token(),
                            .grace = std::chrono::milliseconds(60'000),
                            .on_progress = [&](const scale::Progress& progress) {
                              if (progress.fraction > 0) source.request_stop();
                            }};
  const auto start = Clock::now();
  REQUIRE_THROWS_AS(numbers.map(wait_for_stop, options).get(), scale::Cancelled);
  REQUIRE(Clock::now() - start < 15s);
  REQUIRE(counted(memory, "saw_stop") >= 1);
}

TEMPLATE_TEST_CASE("on_progress moves within long items, never decreases, and ends once at 1 with every item done",
                   SCALE_ITERATOR_TAGS, SCALE_ITERATOR_FACTORIES) {
  using namespace control_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  scale::Iterator<int> numbers(iterator_suite::iota(8), *manager);
  numbers.use_scope(memory);
  support::ProgressSeen seen(memory);
  scale::RunOptions options{.chunk_size = 1, .on_progress = [&](const scale::Progress& p) { seen(p); }};
  REQUIRE(numbers.map(support::half_until_seen, options).get() == iterator_suite::iota(8));
  REQUIRE(seen.finish());
  const std::vector<scale::Progress>& reports = seen.reports;
  REQUIRE(reports.size() >= 2);
  const scale::Progress& last = reports.back();
  REQUIRE(last.fraction == 1.0);
  REQUIRE(last.items_done == 8);
  REQUIRE(last.items_total == 8);
  REQUIRE(last.eta == std::chrono::milliseconds(0));
  for (std::size_t i = 0; i < reports.size(); ++i) {
    const scale::Progress& p = reports[i];
    REQUIRE(p.items_total == 8);
    if (i + 1 < reports.size()) {
      REQUIRE(p.fraction < 1.0);
      REQUIRE(p.fraction <= reports[i + 1].fraction);
      REQUIRE(p.items_done <= reports[i + 1].items_done);
      REQUIRE(p.elapsed <= reports[i + 1].elapsed);
      if (i + 2 < reports.size()) REQUIRE(reports[i + 1].elapsed - p.elapsed >= 50ms);  // at most every 100 ms
    }
    if (p.fraction > 0) REQUIRE(p.eta.has_value());
  }
  nlohmann::json json = last;
  REQUIRE(json.at("items_done") == 8);
  REQUIRE(json.at("fraction") == 1.0);
}

TEMPLATE_TEST_CASE("scope.progress clamps values outside [0, 1] and NaN, and never throws", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace control_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iterator_suite::iota(20), *manager);
  std::vector<double> fractions;
  scale::RunOptions options{.on_progress = [&](const scale::Progress& p) { fractions.push_back(p.fraction); }};
  REQUIRE(numbers.map(iterator_suite::plain<TestType, &bad_progress_values>(), options).get() ==
          iterator_suite::iota(20));
  REQUIRE(!fractions.empty());
  for (double fraction : fractions) REQUIRE((fraction >= 0.0 && fraction <= 1.0));
  REQUIRE(fractions.back() == 1.0);
}

TEMPLATE_TEST_CASE("a negative grace fails the call with std::invalid_argument", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iterator_suite::iota(4), *manager);
  scale::RunOptions options{.grace = std::chrono::milliseconds(-1)};
  REQUIRE_THROWS_AS(numbers.map(iterator_suite::twice, options).get(), std::invalid_argument);
  REQUIRE_THROWS_WITH(numbers.for_each(iterator_suite::nothing, options).get(), Catch::Contains("grace"));
}

TEMPLATE_TEST_CASE("Runtime::request_stop stops the running calls and every later one", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace control_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = iterator_suite::suite_memory<TestType>();
  scale::Iterator<int> numbers(iterator_suite::iota(2), *manager);
  numbers.use_scope(memory);
  scale::RunOptions options{.chunk_size = 1, .on_progress = [&](const scale::Progress& progress) {
                              if (progress.fraction > 0) runtime.request_stop();
                            }};
  REQUIRE_THROWS_AS(numbers.map(wait_for_stop, options).get(), scale::Cancelled);
  REQUIRE(runtime.stop_requested());
  REQUIRE_THROWS_AS(numbers.map(iterator_suite::twice).get(), scale::Cancelled);
}
