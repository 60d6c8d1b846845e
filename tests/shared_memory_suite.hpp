#pragma once
// The SharedMemory behaviour suite, run against every backend. A test file defines its backend
// factories and the type list `MemoryBackends` before including this header, e.g.
//
//   struct InProcess {
//     static scale::SharedMemory make();                            // a fresh, empty store
//     static scale::SharedMemory make_with_history(std::size_t n);  // keeps only the last n changes
//     static std::string name();
//   };
//   using MemoryBackends = std::tuple<InProcess>;
//   #include "shared_memory_suite.hpp"
//
// A backend that cannot watch (a process-pool child's link memory) declares
// `static constexpr const char* cannot_watch = "why";`: the watch cases skip it, saying why, and
// only it.
//
// The tests run with a scale::Runtime and call get() from the test thread; handlers record what
// they see (they run on the loop, where Catch2's assertions must not be used) and the test thread
// waits for them on a condition variable (the timeout only turns a hang into a failure).

#include <catch2/catch.hpp>

#include "support/recorder.hpp"

#include <nlohmann/json.hpp>

#include <scale/detail/loop.hpp>
#include <scale/runtime.hpp>
#include <scale/scope.hpp>
#include <scale/shared_memory.hpp>
#include <scale/subscription.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace memory_suite {

using namespace std::chrono_literals;

using Recorder = support::Recorder<scale::Change>;
using support::flush;
using support::into;

struct Point {
  int x = 0;
  int y = 0;
  bool operator==(const Point&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Point, x, y)

/// A then-callback (a named type: a lambda in a header's template test would have no linkage).
struct Identity {
  scale::Revision operator()(scale::Revision revision) const { return revision; }
};

/// True (after saying why) for a backend whose factory declares `cannot_watch`.
template <class Factory>
bool skips_watch() {
  if constexpr (requires { Factory::cannot_watch; }) {
    WARN("skipped for this backend: " << Factory::cannot_watch);
    return true;
  } else {
    return false;
  }
}

inline bool g_inside_watch = false;  // only touched on the loop thread

/// On the loop: watches from a past revision and notes whether the handler ran inside watch().
inline scale::Future<int> watch_from_the_loop(scale::SharedMemory memory, scale::Revision from,
                                              std::shared_ptr<Recorder> recorder,
                                              std::shared_ptr<std::atomic<bool>> called_inside,
                                              std::shared_ptr<scale::Subscription> out) {
  g_inside_watch = true;
  *out = memory.watch(
      "w/",
      [recorder, called_inside](const scale::Change& change) {
        if (g_inside_watch) called_inside->store(true);
        (*recorder)(change);
      },
      from);
  g_inside_watch = false;
  co_await out->ready();
  co_return 0;
}

/// Scope forwards to the memory, from a coroutine as a worker function would use it.
inline scale::Future<int> use_scope(scale::Scope scope) {
  co_await scope.set("scope/a", 1);
  nlohmann::json object = {{"scope/b", 2}, {"scope/c", "three"}};
  co_await scope.set(object);
  int a = co_await scope.get<int>("scope/a");
  auto entry = co_await scope.entry("scope/b");
  bool swapped = co_await scope.compare_and_set("scope/a", entry->revision + 100, 10);
  auto count = co_await scope.increment("scope/n", 5);
  bool erased = co_await scope.erase("scope/c");
  auto listed = co_await scope.list("scope/");
  co_return a + (entry ? entry->value.get<int>() * 10 : 0) + (swapped ? 100 : 0) + static_cast<int>(count) * 1000 +
      (erased ? 10000 : 0) + static_cast<int>(listed.size()) * 100000;
}

/// The rounds each thread makes in the many-threads case: the factory's `concurrent_rounds` (a
/// backend whose every call is a round trip through other threads or processes declares fewer, so
/// that the case stays seconds long on a loaded 2-core machine), else 500.
template <class Factory>
constexpr int concurrent_rounds() {
  if constexpr (requires { Factory::concurrent_rounds; })
    return Factory::concurrent_rounds;
  else
    return 500;
}

}  // namespace memory_suite

TEMPLATE_LIST_TEST_CASE("a value set under a key reads back as its type with revision and timestamp", "[shared_memory]",
                        MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  auto revision = memory.set("answer", 42).get();
  REQUIRE(revision > 0);
  REQUIRE(memory.get<int>("answer").get() == 42);
  REQUIRE(memory.get<std::int64_t>("answer").get() == 42);
  REQUIRE(memory.get<double>("answer").get() == 42.0);

  auto entry = memory.entry("answer").get();
  REQUIRE(entry.has_value());
  REQUIRE(entry->key == "answer");
  REQUIRE(entry->value == 42);
  REQUIRE(entry->revision == revision);
  REQUIRE(entry->timestamp_ms >= before - 1000);
  REQUIRE_FALSE(memory.entry("absent").get().has_value());

  memory.set("name", std::string("scale")).get();
  memory.set("list", std::vector<int>{1, 2, 3}).get();
  memory.set("point", memory_suite::Point{3, 4}).get();
  memory.set("flag", true).get();
  REQUIRE(memory.get<std::string>("name").get() == "scale");
  REQUIRE(memory.get<std::vector<int>>("list").get() == std::vector<int>{1, 2, 3});
  REQUIRE(memory.get<memory_suite::Point>("point").get() == memory_suite::Point{3, 4});
  REQUIRE(memory.get<bool>("flag").get());
  memory.set("braced", {1, 2, 3}).get();
  REQUIRE(memory.get<std::vector<int>>("braced").get() == std::vector<int>{1, 2, 3});
  auto braced = memory.entry("braced").get()->revision;
  REQUIRE(memory.compare_and_set("braced", braced, {{"now", "an object"}}).get());
  REQUIRE(memory.get<nlohmann::json>("point").get() == nlohmann::json{{"x", 3}, {"y", 4}});
}

TEMPLATE_LIST_TEST_CASE("set with an object writes every key in one step with one revision", "[shared_memory]",
                        MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  auto first = memory.set("before", 0).get();
  nlohmann::json object = {{"a", 1}, {"b", "two"}, {"c", {1, 2}}};
  auto revision = memory.set(object).get();
  REQUIRE(revision == first + 1);
  for (const char* key : {"a", "b", "c"}) REQUIRE(memory.entry(key).get()->revision == revision);
  REQUIRE(memory.get<std::string>("b").get() == "two");

  // The chaining form from a plain thread, with the object built inline.
  REQUIRE(memory.set({{"multiplier", 10}}).then(memory_suite::Identity{}).get() == revision + 1);

  REQUIRE_THROWS_WITH(memory.set(nlohmann::json::array({1, 2})).get(),
                      Catch::Contains("needs a JSON object") && Catch::Contains("set(key, value)"));
  REQUIRE_THROWS_AS(memory.set(nlohmann::json(5)).get(), scale::Error);
}

TEMPLATE_LIST_TEST_CASE("revisions are store-wide and strictly increasing across every kind of write",
                        "[shared_memory]", MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  std::vector<scale::Revision> revisions;
  revisions.push_back(memory.set("x", 1).get());
  revisions.push_back(memory.set("y", 1).get());
  memory.increment("n").get();
  revisions.push_back(memory.entry("n").get()->revision);
  REQUIRE(memory.compare_and_set("x", revisions[0], 2).get());
  revisions.push_back(memory.entry("x").get()->revision);
  REQUIRE(memory.erase("y").get());
  revisions.push_back(memory.set("z", 1).get() - 1);  // the erase took the revision before z's
  revisions.push_back(memory.entry("z").get()->revision);
  for (std::size_t i = 1; i < revisions.size(); ++i) REQUIRE(revisions[i] == revisions[i - 1] + 1);
}

TEMPLATE_LIST_TEST_CASE("get of a missing key fails with KeyNotFound naming the key", "[shared_memory]",
                        MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  REQUIRE_THROWS_AS(memory.get<int>("nowhere").get(), scale::KeyNotFound);
  try {
    memory.get<int>("nowhere").get();
  } catch (const scale::KeyNotFound& error) {
    REQUIRE(error.key() == "nowhere");
    REQUIRE(std::string(error.what()).find("'nowhere'") != std::string::npos);
  }
}

TEMPLATE_LIST_TEST_CASE("get fails with TypeMismatch for another JSON type or a number the type cannot hold",
                        "[shared_memory]", MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  nlohmann::json values = {{"text", "hello"},
                           {"half", 2.5},
                           {"big", 300},
                           {"negative", -1},
                           {"huge", 1e20},
                           {"whole", 3.0},
                           {"flag", true},
                           {"object", {{"a", 1}}},
                           {"odd", 9007199254740993LL},
                           {"max", std::numeric_limits<std::uint64_t>::max()}};
  memory.set(values).get();

  REQUIRE_THROWS_AS(memory.get<int>("text").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<int>("half").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<std::uint8_t>("big").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<unsigned>("negative").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<std::int64_t>("huge").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<int>("flag").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<bool>("big").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<std::string>("big").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<std::vector<int>>("object").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<memory_suite::Point>("text").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.get<double>("odd").get(), scale::TypeMismatch);  // 2^53 + 1 is not a double
  REQUIRE_THROWS_AS(memory.get<std::int64_t>("max").get(), scale::TypeMismatch);
  REQUIRE_THROWS_WITH(memory.get<int>("half").get(),
                      Catch::Contains("'half'") && Catch::Contains("2.5") && Catch::Contains("int"));

  // Exact conversions are fine.
  REQUIRE(memory.get<int>("whole").get() == 3);
  REQUIRE(memory.get<double>("half").get() == 2.5);
  REQUIRE(memory.get<float>("half").get() == 2.5f);
  REQUIRE(memory.get<std::int16_t>("big").get() == 300);
  REQUIRE(memory.get<int>("negative").get() == -1);
  REQUIRE(memory.get<double>("huge").get() == 1e20);
  REQUIRE(memory.get<std::int64_t>("odd").get() == 9007199254740993LL);
  REQUIRE(memory.get<std::uint64_t>("max").get() == std::numeric_limits<std::uint64_t>::max());
}

TEMPLATE_LIST_TEST_CASE("erase removes a key and reports whether it was there", "[shared_memory]", MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  auto revision = memory.set("k", 1).get();
  REQUIRE(memory.erase("k").get());
  REQUIRE_FALSE(memory.entry("k").get().has_value());
  REQUIRE_FALSE(memory.erase("k").get());
  // The erase used one revision, the failed erase none.
  REQUIRE(memory.set("other", 1).get() == revision + 2);
}

TEMPLATE_LIST_TEST_CASE("compare_and_set writes only when the revision matches, 0 meaning absent", "[shared_memory]",
                        MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  REQUIRE(memory.compare_and_set("lock", 0, std::string("me")).get());
  auto created = memory.entry("lock").get()->revision;
  REQUIRE_FALSE(memory.compare_and_set("lock", 0, std::string("you")).get());
  REQUIRE_FALSE(memory.compare_and_set("lock", created + 5, std::string("you")).get());
  REQUIRE_FALSE(memory.compare_and_set("missing", 7, 1).get());
  REQUIRE(memory.get<std::string>("lock").get() == "me");
  REQUIRE(memory.compare_and_set("lock", created, std::string("you")).get());
  auto entry = memory.entry("lock").get();
  REQUIRE(entry->value == "you");
  // The three failed attempts used no revision.
  REQUIRE(entry->revision == created + 1);
}

TEMPLATE_LIST_TEST_CASE("increment counts from 0 for a missing key and refuses a non-integer", "[shared_memory]",
                        MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  REQUIRE(memory.increment("count").get() == 1);
  REQUIRE(memory.increment("count", 41).get() == 42);
  REQUIRE(memory.increment("count", -50).get() == -8);
  REQUIRE(memory.get<int>("count").get() == -8);
  memory.set("text", std::string("x")).get();
  memory.set("real", 1.5).get();
  auto revision = memory.entry("real").get()->revision;
  REQUIRE_THROWS_AS(memory.increment("text").get(), scale::TypeMismatch);
  REQUIRE_THROWS_AS(memory.increment("real").get(), scale::TypeMismatch);
  REQUIRE(memory.get<double>("real").get() == 1.5);
  REQUIRE(memory.set("after", 1).get() == revision + 1);
}

TEMPLATE_LIST_TEST_CASE("list returns the entries under a prefix sorted by key", "[shared_memory]", MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  nlohmann::json object = {{"user/c", 3}, {"user/a", 1}, {"users", 9}, {"other/x", 0}, {"user/b", 2}};
  memory.set(object).get();
  auto users = memory.list("user/").get();
  REQUIRE(users.size() == 3);
  REQUIRE(users[0].key == "user/a");
  REQUIRE(users[1].key == "user/b");
  REQUIRE(users[2].key == "user/c");
  REQUIRE(users[2].value == 3);
  REQUIRE(memory.list().get().size() == 5);
  REQUIRE(memory.list("nothing/").get().empty());
}

TEMPLATE_LIST_TEST_CASE("copies of a SharedMemory share one store", "[shared_memory]", MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  scale::SharedMemory copy = memory;
  copy.set("shared", 5).get();
  REQUIRE(memory.get<int>("shared").get() == 5);
}

TEMPLATE_LIST_TEST_CASE("a watch from 0 sees only later changes, in order, on the loop thread",
                        "[shared_memory][subscription]", MemoryBackends) {
  if (memory_suite::skips_watch<TestType>()) return;
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  memory.set("w/old", 1).get();
  auto recorder = std::make_shared<memory_suite::Recorder>();
  auto subscription = memory.watch("w/", memory_suite::into(recorder));
  subscription.ready().get();
  auto first = memory.set("w/a", 1).get();
  memory.set("elsewhere", 1).get();
  memory.set("w/b", std::string("two")).get();
  memory.erase("w/a").get();
  REQUIRE(recorder->wait_for(3));
  memory_suite::flush(runtime);
  auto changes = recorder->items();
  REQUIRE(changes.size() == 3);
  REQUIRE(changes[0].key == "w/a");
  REQUIRE(changes[0].revision == first);
  REQUIRE(changes[0].value == 1);
  REQUIRE_FALSE(changes[0].erased);
  REQUIRE(changes[1].key == "w/b");
  REQUIRE(changes[1].value == "two");
  REQUIRE(changes[1].revision == first + 2);
  REQUIRE(changes[2].key == "w/a");
  REQUIRE(changes[2].erased);
  REQUIRE(changes[2].revision == first + 3);
  REQUIRE(changes[2].timestamp_ms >= changes[0].timestamp_ms);
  REQUIRE(recorder->off_loop() == 0);
}

TEMPLATE_LIST_TEST_CASE("a watch from a past revision replays history first and never calls inside watch",
                        "[shared_memory][subscription]", MemoryBackends) {
  if (memory_suite::skips_watch<TestType>()) return;
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  auto first = memory.set("w/1", 1).get();
  memory.set("w/2", 2).get();
  memory.set("x/3", 3).get();
  nlohmann::json object = {{"w/4", 4}, {"w/5", 5}};
  auto pair = memory.set(object).get();

  auto recorder = std::make_shared<memory_suite::Recorder>();
  auto called_inside = std::make_shared<std::atomic<bool>>(false);
  auto subscription = std::make_shared<scale::Subscription>();
  runtime.run(
      [&] { return memory_suite::watch_from_the_loop(memory, first + 1, recorder, called_inside, subscription); });
  memory.set("w/6", 6).get();
  REQUIRE(recorder->wait_for(4));
  auto changes = recorder->items();
  REQUIRE(changes.size() == 4);
  REQUIRE(changes[0].key == "w/2");
  REQUIRE(changes[1].key == "w/4");
  REQUIRE(changes[1].revision == pair);
  REQUIRE(changes[2].key == "w/5");
  REQUIRE(changes[2].revision == pair);
  REQUIRE(changes[3].key == "w/6");
  REQUIRE_FALSE(called_inside->load());
  REQUIRE(recorder->off_loop() == 0);
  subscription->cancel();
}

TEMPLATE_LIST_TEST_CASE("a watch from a revision not yet written delivers exactly the revisions from it on",
                        "[shared_memory][subscription]", MemoryBackends) {
  if (memory_suite::skips_watch<TestType>()) return;
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  const auto now = memory.set("w/0", 0).get();
  auto recorder = std::make_shared<memory_suite::Recorder>();
  auto subscription = memory.watch("w/", memory_suite::into(recorder), now + 3);
  subscription.ready().get();
  for (int i = 1; i <= 4; ++i) memory.set("w/" + std::to_string(i), i).get();  // now + 1 ... now + 4
  REQUIRE(recorder->wait_for(2));
  memory_suite::flush(runtime);
  auto changes = recorder->items();
  REQUIRE(changes.size() == 2);
  REQUIRE(changes[0].revision == now + 3);
  REQUIRE(changes[0].key == "w/3");
  REQUIRE(changes[1].revision == now + 4);
  REQUIRE(changes[1].key == "w/4");
}

TEMPLATE_LIST_TEST_CASE("a watch from the past sees every revision once, in order, while threads write",
                        "[shared_memory][subscription]", MemoryBackends) {
  if (memory_suite::skips_watch<TestType>()) return;
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  for (int i = 0; i < 100; ++i) memory.set("c/warmup", i).get();
  const scale::Revision from = memory.entry("c/warmup").get()->revision - 49;

  constexpr int threads = 4;
  constexpr int writes = 2000;
  std::atomic<bool> go{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t)
    writers.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < writes; ++i) memory.set("c/" + std::to_string(t) + "/" + std::to_string(i % 10), i).get();
    });
  go = true;
  auto recorder = std::make_shared<memory_suite::Recorder>();
  auto subscription = memory.watch("c/", memory_suite::into(recorder), from);
  subscription.ready().get();
  for (auto& writer : writers) writer.join();

  auto last = memory.set("c/last", 0).get();
  auto expected = static_cast<std::size_t>(last - from + 1);
  REQUIRE(recorder->wait_for(expected));
  memory_suite::flush(runtime);
  auto changes = recorder->items();
  REQUIRE(changes.size() == expected);
  bool consecutive = true;
  for (std::size_t i = 0; i < changes.size(); ++i)
    if (changes[i].revision != from + static_cast<scale::Revision>(i)) consecutive = false;
  REQUIRE(consecutive);
  REQUIRE(recorder->off_loop() == 0);
}

TEMPLATE_LIST_TEST_CASE("a watch from before the kept history fails ready() with Compacted and never calls",
                        "[shared_memory][subscription]", MemoryBackends) {
  if (memory_suite::skips_watch<TestType>()) return;
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make_with_history(100);
  auto first = memory.set("k", 0).get();
  for (int i = 1; i < 300; ++i) memory.set("k", i).get();
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto subscription = memory.watch(
      "", [calls](const scale::Change&) { calls->fetch_add(1); }, first);
  REQUIRE_THROWS_AS(subscription.ready().get(), scale::Compacted);
  try {
    subscription.ready().get();
  } catch (const scale::Compacted& error) {
    REQUIRE(error.requested() == first);
    REQUIRE(error.oldest_kept() > first);
    REQUIRE(std::string(error.what()).find("list()") != std::string::npos);
  }
  memory.set("k", -1).get();
  memory_suite::flush(runtime);
  REQUIRE(calls->load() == 0);

  // A revision still in the history works.
  auto recorder = std::make_shared<memory_suite::Recorder>();
  auto recent = memory.watch("", memory_suite::into(recorder), first + 250);
  recent.ready().get();
  REQUIRE(recorder->wait_for(51));
}

TEMPLATE_LIST_TEST_CASE("cancel from another thread waits for the running handler and stops every later call",
                        "[shared_memory][subscription]", MemoryBackends) {
  if (memory_suite::skips_watch<TestType>()) return;
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  struct Shared {
    std::atomic<int> calls{0};
    std::atomic<bool> entered{false};
    std::atomic<bool> release{false};
    std::atomic<bool> finished{false};
  };
  auto shared = std::make_shared<Shared>();
  auto subscription = memory.watch("", [shared](const scale::Change&) {
    if (shared->calls.fetch_add(1) == 0) {
      shared->entered = true;
      while (!shared->release.load()) std::this_thread::yield();
      // Work that outlasts the release: cancel() must still wait for it.
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      shared->finished = true;
    }
  });
  subscription.ready().get();
  memory.set("a", 1).get();
  while (!shared->entered.load()) std::this_thread::yield();
  memory.set("b", 2).get();  // queued behind the running handler
  memory.set("c", 3).get();

  bool finished_when_cancel_returned = false;
  std::thread canceller([&] {
    shared->release = true;
    subscription.cancel();
    finished_when_cancel_returned = shared->finished.load();
  });
  canceller.join();
  REQUIRE(finished_when_cancel_returned);
  memory.set("d", 4).get();
  memory_suite::flush(runtime);
  REQUIRE(shared->calls.load() == 1);
  REQUIRE_FALSE(subscription.active());
}

TEMPLATE_LIST_TEST_CASE("cancel from inside the handler returns at once and stops later calls",
                        "[shared_memory][subscription]", MemoryBackends) {
  if (memory_suite::skips_watch<TestType>()) return;
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto holder = std::make_shared<scale::Subscription>();
  auto recorder = std::make_shared<memory_suite::Recorder>();
  *holder = memory.watch("", [calls, holder](const scale::Change&) {
    calls->fetch_add(1);
    holder->cancel();
  });
  holder->ready().get();
  auto witness = memory.watch("", memory_suite::into(recorder));
  witness.ready().get();
  nlohmann::json burst = {{"a", 1}, {"b", 2}, {"c", 3}};
  memory.set(burst).get();
  memory.set("d", 4).get();
  REQUIRE(recorder->wait_for(4));
  memory_suite::flush(runtime);
  REQUIRE(calls->load() == 1);
}

TEMPLATE_LIST_TEST_CASE("destroying a Subscription stops delivery", "[shared_memory][subscription]", MemoryBackends) {
  if (memory_suite::skips_watch<TestType>()) return;
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  auto dropped = std::make_shared<memory_suite::Recorder>();
  auto kept = std::make_shared<memory_suite::Recorder>();
  auto witness = memory.watch("", memory_suite::into(kept));
  witness.ready().get();
  {
    auto subscription = memory.watch("", memory_suite::into(dropped));
    subscription.ready().get();
    memory.set("a", 1).get();
    REQUIRE(dropped->wait_for(1));
  }
  memory.set("b", 2).get();
  REQUIRE(kept->wait_for(2));
  memory_suite::flush(runtime);
  REQUIRE(dropped->size() == 1);

  scale::Subscription moved = memory.watch("", memory_suite::into(dropped));
  scale::Subscription target = std::move(moved);
  REQUIRE(target.active());
  REQUIRE_FALSE(moved.active());
  REQUIRE_THROWS_AS(moved.ready().get(), scale::Error);
}

TEMPLATE_LIST_TEST_CASE("many threads write and read one SharedMemory at once", "[shared_memory]", MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  constexpr int threads = 8;
  constexpr int rounds = memory_suite::concurrent_rounds<TestType>();
  std::vector<std::thread> workers;
  std::atomic<int> failures{0};
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      auto key = "own/" + std::to_string(t);
      for (int i = 0; i < rounds; ++i) {
        memory.increment("counter").get();
        memory.set(key, i).get();
        if (memory.get<int>(key).get() != i) failures.fetch_add(1);
        // Optimistic update through compare_and_set.
        for (;;) {
          auto entry = memory.entry("cas").get();
          auto revision = entry ? entry->revision : 0;
          int value = entry ? entry->value.get<int>() : 0;
          if (memory.compare_and_set("cas", revision, value + 1).get()) break;
        }
      }
    });
  for (auto& worker : workers) worker.join();
  REQUIRE(failures.load() == 0);
  REQUIRE(memory.get<int>("counter").get() == threads * rounds);
  REQUIRE(memory.get<int>("cas").get() == threads * rounds);
  REQUIRE(memory.list("own/").get().size() == threads);
}

TEMPLATE_LIST_TEST_CASE("Scope forwards every SharedMemory call to the memory it was given", "[scope]",
                        MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  scale::Scope scope(&memory, nullptr);
  REQUIRE(scope.has_memory());
  REQUIRE_FALSE(scope.has_events());
  int result = runtime.run([&] { return memory_suite::use_scope(scope); });
  // a=1, b=2 (x10), CAS with a stale revision fails, n=5 (x1000), c erased, 3 keys left.
  REQUIRE(result == 1 + 20 + 0 + 5000 + 10000 + 300000);
  REQUIRE(memory.get<int>("scope/n").get() == 5);

  // From pool threads at once.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 250; ++i) scope.increment("scope/shared").get();
    });
  for (auto& thread : threads) thread.join();
  REQUIRE(scope.get<int>("scope/shared").get() == 1000);
}

TEMPLATE_LIST_TEST_CASE("a watch from a negative revision fails its ready() and never calls the handler",
                        "[shared_memory][watch]", MemoryBackends) {
  scale::Runtime runtime;
  scale::SharedMemory memory = TestType::make();
  auto recorder = std::make_shared<memory_suite::Recorder>();
  auto subscription = memory.watch("", memory_suite::into(recorder), -5);
  REQUIRE_THROWS_WITH(subscription.ready().get(), Catch::Contains("negative"));
  memory.set("k", 1).get();
  memory_suite::flush(runtime);
  REQUIRE(recorder->size() == 0);
}
