#pragma once
// The Iterator behaviour suite, written once and run on every manager.
//
// Include it after defining SCALE_ITERATOR_FACTORIES (a comma-separated list of factory types,
// each with `static std::unique_ptr<scale::ScalabilityManager> make();`) and
// SCALE_ITERATOR_TAGS (the Catch2 tags of the instantiation), e.g.
//
//   #define SCALE_ITERATOR_FACTORIES InlineFactory, ThreadPoolFactory
//   #define SCALE_ITERATOR_TAGS "[iterator][inline][thread_pool]"
//   #include "iterator_suite.hpp"
//
// A factory whose manager ships work to other processes also declares
// `static constexpr bool ships = true;`: there a plain function goes as scale::fn<&f> (a function
// pointer cannot travel), an exception arrives as scale::RemoteError naming the original type, and
// a result type without to_json/from_json fails at once with scale::Error.
//
// The worker functions here capture nothing and reach shared state only through Scope, so the
// suite also runs on managers that ship work to other processes.

#include <catch2/catch.hpp>

#include <scale/error.hpp>
#include <scale/fn.hpp>
#include <scale/iterator.hpp>
#include <scale/runtime.hpp>
#include <scale/scope.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <ranges>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

// GCC 12 warns about members left out of a designated initialiser (-Wextra); leaving them out is
// the point of RunOptions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

#ifndef SCALE_ITERATOR_FACTORIES
#error "define SCALE_ITERATOR_FACTORIES (the manager factories to run the suite on) before including iterator_suite.hpp"
#endif
#ifndef SCALE_ITERATOR_TAGS
#define SCALE_ITERATOR_TAGS "[iterator]"
#endif

namespace iterator_suite {

/// True for a factory whose manager serializes work (declares `ships = true`).
template <class Factory>
constexpr bool ships() {
  if constexpr (requires { Factory::ships; })
    return Factory::ships;
  else
    return false;
}

/// A plain function as the Factory's manager takes it: the pointer itself on the thread tiers,
/// scale::fn<&f> where work crosses a process boundary.
template <class Factory, auto Function>
constexpr auto plain() {
  if constexpr (ships<Factory>())
    return scale::fn<Function>;
  else
    return Function;
}

struct ItemFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A result type with no default constructor.
struct Labelled {
  explicit Labelled(int v) : value(v) {}
  int value;
};

/// The state a test's scope uses: in this process, unless the factory names its own (a manager
/// whose workers cannot reach this process declares `static scale::SharedMemory memory();` and
/// `static scale::SharedEventEmitter events();`, e.g. on redis://).
template <class Factory>
scale::SharedMemory suite_memory() {
  if constexpr (requires { Factory::memory(); })
    return Factory::memory();
  else
    return scale::SharedMemory();
}

template <class Factory>
scale::SharedEventEmitter suite_events() {
  if constexpr (requires { Factory::events(); })
    return Factory::events();
  else
    return scale::SharedEventEmitter();
}

inline std::vector<int> iota(int n) {
  std::vector<int> items(static_cast<std::size_t>(n));
  std::iota(items.begin(), items.end(), 0);
  return items;
}

// The four shapes, for map.
inline constexpr auto twice = [](int x) { return 2 * x; };
inline constexpr auto times_multiplier = [](int x, scale::Scope& scope) -> scale::Future<int> {
  int multiplier = co_await scope.get<int>("multiplier");
  co_return x* multiplier;
};
inline constexpr auto twice_later = [](int x) -> scale::Future<int> { co_return 2 * x; };
inline int plain_times_three(int x, scale::Scope& scope) { return scope.has_memory() ? 3 * x : -1; }

// The four shapes, for filter.
inline constexpr auto is_even = [](int x) { return x % 2 == 0; };
inline constexpr auto is_even_later = [](int x) -> scale::Future<bool> { co_return x % 2 == 0; };
inline constexpr auto divisible_by_multiplier = [](int x, scale::Scope& scope) -> scale::Future<bool> {
  int multiplier = co_await scope.get<int>("multiplier");
  co_return x % multiplier == 0;
};
inline bool plain_divisible_by_three(int x, scale::Scope&) { return x % 3 == 0; }

// reduce.
inline constexpr auto plus = [](int a, int b) { return a + b; };
inline constexpr auto plus_later = [](int a, int b) -> scale::Future<int> { co_return a + b; };
inline constexpr auto plus_times_multiplier = [](std::int64_t acc, int x,
                                                 scale::Scope& scope) -> scale::Future<std::int64_t> {
  int multiplier = co_await scope.get<int>("multiplier");
  co_return acc + std::int64_t{x} * multiplier;
};
inline std::int64_t plain_plus_scoped(std::int64_t acc, int x, scale::Scope&) { return acc + x; }
inline constexpr auto add64 = [](std::int64_t a, std::int64_t b) { return a + b; };
inline constexpr auto append_digit = [](std::string acc, int x) { return acc + std::to_string(x % 10); };
inline constexpr auto concat = [](std::string a, std::string b) { return a + b; };

// for_each: effects go through the scope, so they are visible whatever runs the function.
inline constexpr auto count_into_scope = [](int x, scale::Scope& scope) -> scale::Future<void> {
  co_await scope.increment("sum", x);
};
inline int plain_needs_scope(int x, scale::Scope& scope) {
  if (!scope.has_memory()) throw ItemFailed("the scope did not reach the function");
  return x;
}
inline constexpr auto unstopped_with_progress = [](int, scale::Scope& scope) {
  scope.progress(0.5);
  return scope.stop_requested() ? 0 : 1;
};
inline constexpr auto nothing = [](int) {};
inline constexpr auto nothing_later = [](int) -> scale::Future<void> { co_return; };

// Result types: move-only, without a default constructor, bool (never std::vector<bool>'s shared bits).
inline constexpr auto boxed = [](int x) { return std::make_unique<int>(x); };
inline constexpr auto labelled = [](int x) { return Labelled(x + 1); };
inline constexpr auto is_odd = [](int x) { return x % 2 == 1; };
inline constexpr auto length = [](const std::string& s) { return s.size(); };
inline constexpr auto exclaim = [](std::string s) -> scale::Future<std::string> { co_return s + "!"; };

inline constexpr auto throw_on_three = [](int x) {
  if (x == 3) throw ItemFailed("item 3 failed");
  return x;
};

}  // namespace iterator_suite

TEMPLATE_TEST_CASE("map returns every result in input order, for 100,000 items", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iota(100'000), *manager);
  std::vector<int> result = numbers.map(twice).get();
  REQUIRE(result.size() == 100'000);
  for (std::size_t i = 0; i < result.size(); ++i) REQUIRE(result[i] == static_cast<int>(2 * i));
}

TEMPLATE_TEST_CASE("map takes R(T), R(T, Scope&), Future<R>(T) and Future<R>(T, Scope&)", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = suite_memory<TestType>();
  memory.set("multiplier", 10).get();
  scale::Iterator<int> numbers({1, 2, 3, 4, 5}, *manager);
  numbers.use_scope(memory);
  REQUIRE(numbers.map(twice).get() == std::vector<int>{2, 4, 6, 8, 10});
  REQUIRE(numbers.map(plain<TestType, &plain_times_three>()).get() == std::vector<int>{3, 6, 9, 12, 15});
  REQUIRE(numbers.map(twice_later).get() == std::vector<int>{2, 4, 6, 8, 10});
  REQUIRE(numbers.map(times_multiplier).get() == std::vector<int>{10, 20, 30, 40, 50});
}

TEMPLATE_TEST_CASE("the canonical program's map reads the multiplier through the scope", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = suite_memory<TestType>();
  scale::SharedEventEmitter events = suite_events<TestType>();
  scale::Iterator<int> numbers({1, 2, 3, 4, 5}, *manager);
  numbers.use_scope(memory, events);
  std::vector<int> result = runtime.run([&]() -> scale::Future<std::vector<int>> {
    return [](scale::SharedMemory* memory, const scale::Iterator<int>* numbers) -> scale::Future<std::vector<int>> {
      co_await memory->set("multiplier", 10);
      scale::RunOptions options{.chunk_size = 2};
      std::vector<int> values = co_await numbers->map(times_multiplier, options);
      co_return values;
    }(&memory, &numbers);
  });
  REQUIRE(result == std::vector<int>{10, 20, 30, 40, 50});
}

TEMPLATE_TEST_CASE("filter keeps the items its predicate accepts, in input order, in all four shapes",
                   SCALE_ITERATOR_TAGS, SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = suite_memory<TestType>();
  memory.set("multiplier", 4).get();
  scale::Iterator<int> numbers(iota(20), *manager);
  numbers.use_scope(memory);
  scale::RunOptions options{.chunk_size = 3};
  REQUIRE(numbers.filter(is_even, options).get() == std::vector<int>{0, 2, 4, 6, 8, 10, 12, 14, 16, 18});
  REQUIRE(numbers.filter(is_even_later).get() == std::vector<int>{0, 2, 4, 6, 8, 10, 12, 14, 16, 18});
  REQUIRE(numbers.filter(plain<TestType, &plain_divisible_by_three>()).get() ==
          std::vector<int>{0, 3, 6, 9, 12, 15, 18});
  REQUIRE(numbers.filter(divisible_by_multiplier, options).get() == std::vector<int>{0, 4, 8, 12, 16});
}

TEMPLATE_TEST_CASE("reduce folds with fn(T, T) and with fn(A, T) plus combine, in all four shapes", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = suite_memory<TestType>();
  memory.set("multiplier", 2).get();
  scale::Iterator<int> numbers(iota(1000), *manager);
  numbers.use_scope(memory);
  scale::RunOptions options{.chunk_size = 7};
  REQUIRE(numbers.reduce(plus, 0).get() == 499'500);
  REQUIRE(numbers.reduce(plus_later, 0, options).get() == 499'500);
  REQUIRE(numbers.reduce(plain<TestType, &plain_plus_scoped>(), std::int64_t{0}, add64).get() == 499'500);
  REQUIRE(numbers.reduce(plus_times_multiplier, std::int64_t{0}, add64, options).get() == 999'000);
  // Chunk results combine in input order: a non-commutative fold gives the sequential answer.
  std::string expected;
  for (int i = 0; i < 1000; ++i) expected += std::to_string(i % 10);
  REQUIRE(numbers.reduce(append_digit, std::string(), concat, options).get() == expected);
}

TEMPLATE_TEST_CASE("for_each runs the function once per item, in all four shapes", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::SharedMemory memory = suite_memory<TestType>();
  scale::Iterator<int> numbers(iota(100), *manager);
  numbers.use_scope(memory);
  numbers.for_each(nothing).get();
  numbers.for_each(nothing_later).get();
  numbers.for_each(count_into_scope).get();
  REQUIRE(memory.get<std::int64_t>("sum").get() == 4950);
  numbers.for_each(plain<TestType, &plain_needs_scope>()).get();
}

TEMPLATE_TEST_CASE("an empty input gives an empty result at once", SCALE_ITERATOR_TAGS, SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> none(std::vector<int>{}, *manager);
  auto mapped = none.map(twice);
  REQUIRE(mapped.ready());
  REQUIRE(mapped.get().empty());
  REQUIRE(none.filter(is_even).get().empty());
  REQUIRE(none.reduce(plus, 42).get() == 42);
  none.for_each(nothing).get();
  REQUIRE(manager->stats().tasks_done == 0);
}

TEMPLATE_TEST_CASE("chunk_size cuts the work into chunks of that many items", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iota(101), *manager);
  std::vector<int> expected = numbers.map(twice).get();
  for (std::size_t chunk_size :
       {std::size_t{1}, std::size_t{7}, std::size_t{100}, std::size_t{101}, std::size_t{5000}}) {
    auto before = manager->stats().tasks_done;
    scale::RunOptions options{.chunk_size = chunk_size};
    REQUIRE(numbers.map(twice, options).get() == expected);
    REQUIRE(manager->stats().tasks_done - before == (101 + chunk_size - 1) / chunk_size);
    REQUIRE(numbers.reduce(plus, 0, options).get() == 5'050);
  }
}

TEMPLATE_TEST_CASE("progress is reported on the loop thread, never decreasing, ending at the total",
                   SCALE_ITERATOR_TAGS, SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iota(1000), *manager);
  struct Report {
    std::vector<std::size_t> done;
    std::size_t total = 0;
    bool all_on_loop = true;
  };
  auto report = std::make_shared<Report>();
  scale::RunOptions options{.chunk_size = 64, .progress = [report](std::size_t done, std::size_t total) {
                              report->done.push_back(done);
                              report->total = total;
                              report->all_on_loop = report->all_on_loop && scale::detail::on_loop_thread();
                            }};
  numbers.map(twice, options).get();
  REQUIRE(report->done.size() == 16);
  REQUIRE(std::is_sorted(report->done.begin(), report->done.end()));
  REQUIRE(report->done.back() == 1000);
  REQUIRE(report->total == 1000);
  REQUIRE(report->all_on_loop);
}

TEMPLATE_TEST_CASE("an exception thrown by the function fails the whole call with that exception", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iota(100), *manager);
  scale::RunOptions options{.chunk_size = 5};
  if constexpr (ships<TestType>()) {
    // Across a process boundary the original type arrives by name.
    REQUIRE_THROWS_AS(numbers.map(throw_on_three, options).get(), scale::RemoteError);
    REQUIRE_THROWS_WITH(numbers.for_each(throw_on_three).get(),
                        Catch::Contains("iterator_suite::ItemFailed") && Catch::Contains("item 3 failed"));
    REQUIRE_THROWS_AS(numbers.filter(throw_on_three).get(), scale::RemoteError);
  } else {
    REQUIRE_THROWS_AS(numbers.map(throw_on_three, options).get(), ItemFailed);
    REQUIRE_THROWS_WITH(numbers.for_each(throw_on_three).get(), "item 3 failed");
    REQUIRE_THROWS_AS(numbers.filter(throw_on_three).get(), ItemFailed);
  }
  // Caught inside a coroutine too.
  bool caught = runtime.run([&]() -> scale::Future<bool> {
    return [](const scale::Iterator<int>* numbers) -> scale::Future<bool> {
      try {
        co_await numbers->map(throw_on_three);
      } catch (const ItemFailed&) {
        co_return true;
      } catch (const scale::RemoteError& error) {
        co_return ships<TestType>() && error.type_name() == "iterator_suite::ItemFailed";
      }
      co_return false;
    }(&numbers);
  });
  REQUIRE(caught);
  auto stats = manager->stats();
  REQUIRE(stats.tasks_failed >= 4);
  REQUIRE(stats.tasks_running == 0);
  // The manager is still usable afterwards.
  REQUIRE(numbers.map(twice).get().size() == 100);
}

TEMPLATE_TEST_CASE("a function may take Scope& without use_scope: a memory or emit call then fails, saying to call use_scope",
                   SCALE_ITERATOR_TAGS, SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iota(10), *manager);
  // stop_requested() and progress() need no shared state.
  REQUIRE(numbers.map(plain<TestType, &plain_times_three>()).get() == std::vector<int>(10, -1));
  REQUIRE(numbers.map(unstopped_with_progress).get() == std::vector<int>(10, 1));
  // A memory call fails at that call, with a scale::Error that says what to do.
  REQUIRE_THROWS_AS(numbers.map(times_multiplier).get(), scale::Error);
  REQUIRE_THROWS_WITH(numbers.map(times_multiplier).get(), Catch::Contains("use_scope"));
  REQUIRE_THROWS_WITH(numbers.filter(divisible_by_multiplier).get(), Catch::Contains("use_scope"));
  REQUIRE_THROWS_WITH(numbers.reduce(plus_times_multiplier, std::int64_t{0}, add64).get(),
                      Catch::Contains("use_scope"));
  REQUIRE_THROWS_WITH(numbers.for_each(count_into_scope).get(), Catch::Contains("use_scope"));
}

TEMPLATE_TEST_CASE("map returns move-only results and results without a default constructor", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iota(50), *manager);
  scale::RunOptions options{.chunk_size = 3};
  std::vector<std::unique_ptr<int>> boxes;
  if constexpr (ships<TestType>()) {
    // A pointer cannot cross a process boundary: the call fails at once, naming the fix.
    REQUIRE_THROWS_WITH(numbers.map(boxed, options).get(), Catch::Contains("to_json"));
  } else {
    boxes = numbers.map(boxed, options).get();
    REQUIRE(boxes.size() == 50);
  }
  std::vector<Labelled> labels = numbers.map(labelled, options).get();
  std::vector<bool> odd = numbers.map(is_odd, options).get();
  REQUIRE(labels.size() == 50);
  for (int i = 0; i < 50; ++i) {
    if (!boxes.empty()) REQUIRE(*boxes[static_cast<std::size_t>(i)] == i);
    REQUIRE(labels[static_cast<std::size_t>(i)].value == i + 1);
    REQUIRE(odd[static_cast<std::size_t>(i)] == (i % 2 == 1));
  }
}

TEMPLATE_TEST_CASE("a call outlives the Iterator it came from, and Iterators build from any range", SCALE_ITERATOR_TAGS,
                   SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Future<std::vector<int>> pending;
  {
    scale::Iterator numbers(std::views::iota(0, 1000), *manager);
    static_assert(std::is_same_v<decltype(numbers), scale::Iterator<int>>);
    pending = numbers.map(twice);
  }
  std::vector<int> result = pending.get();
  REQUIRE(result.size() == 1000);
  REQUIRE(result[999] == 1998);
  std::vector<std::string> words{"a", "bb", "ccc"};
  scale::Iterator<std::string> strings(words, *manager);
  REQUIRE(strings.map(length).get() == std::vector<std::size_t>{1, 2, 3});
  REQUIRE(strings.map(exclaim).get() == std::vector<std::string>{"a!", "bb!", "ccc!"});
}

TEMPLATE_TEST_CASE("stats count the chunks a call ran", SCALE_ITERATOR_TAGS, SCALE_ITERATOR_FACTORIES) {
  using namespace iterator_suite;
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(iota(100), *manager);
  auto before = manager->stats();
  REQUIRE(before.workers_alive >= 1);
  scale::RunOptions options{.chunk_size = 10};
  numbers.map(twice, options).get();
  auto after = manager->stats();
  REQUIRE(after.tasks_done - before.tasks_done == 10);
  REQUIRE(after.tasks_failed == before.tasks_failed);
  REQUIRE(after.tasks_queued == 0);
  REQUIRE(after.tasks_running == 0);
  REQUIRE(after.tasks_retried == 0);
}
