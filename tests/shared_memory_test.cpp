// SharedMemory, Subscription and Scope on the in-process backend: the shared behaviour suite plus
// what only the in-process backend has (its options, URL dispatch, Scope without state).

#include <cstddef>
#include <string>
#include <tuple>

#include <scale/scope.hpp>
#include <scale/shared_memory.hpp>

struct InProcess {
  static scale::SharedMemory make() { return scale::SharedMemory(); }
  static scale::SharedMemory make_with_history(std::size_t history) {
    return scale::SharedMemory(scale::SharedMemory::Options{.history = history});
  }
};
using MemoryBackends = std::tuple<InProcess>;

#include "shared_memory_suite.hpp"

TEST_CASE("separately constructed in-process SharedMemory objects are separate stores", "[shared_memory]") {
  scale::Runtime runtime;
  scale::SharedMemory a;
  scale::SharedMemory b;
  a.set("k", 1).get();
  REQUIRE_FALSE(b.entry("k").get().has_value());
}

TEST_CASE("a SharedMemory URL that is malformed or has an unknown scheme throws a clear error", "[shared_memory]") {
  REQUIRE_THROWS_WITH(scale::SharedMemory("http://localhost:port"),
                      Catch::Contains("http://localhost:port") && Catch::Contains("port must be a number"));
  REQUIRE_THROWS_WITH(scale::SharedMemory("redis://localhost:port"), Catch::Contains("redis://"));
  REQUIRE_THROWS_WITH(scale::SharedMemory(std::string("ftp://x")), Catch::Contains("unsupported URL"));
}

TEST_CASE("the history kept for watches is bounded by the history option", "[shared_memory][subscription]") {
  scale::Runtime runtime;
  scale::SharedMemory memory(scale::SharedMemory::Options{.history = 10});
  scale::Revision last = 0;
  for (int i = 0; i < 20; ++i) last = memory.set("k", i).get();
  REQUIRE(memory
              .watch(
                  "", [](const scale::Change&) {}, last - 9)
              .ready()
              .valid());
  memory
      .watch(
          "", [](const scale::Change&) {}, last - 9)
      .ready()
      .get();
  REQUIRE_THROWS_AS(memory
                        .watch(
                            "", [](const scale::Change&) {}, last - 10)
                        .ready()
                        .get(),
                    scale::Compacted);
  // A revision in the future is fine: it delivers once the store gets there.
  memory
      .watch(
          "", [](const scale::Change&) {}, last + 100)
      .ready()
      .get();
  REQUIRE_THROWS_AS(memory
                        .watch(
                            "", [](const scale::Change&) {}, -1)
                        .ready()
                        .get(),
                    scale::Error);
}

TEST_CASE("a Scope without shared state fails every call with an error that says to call use_scope", "[scope]") {
  scale::Runtime runtime;
  scale::Scope scope(nullptr, nullptr);
  REQUIRE_FALSE(scope.has_memory());
  REQUIRE_FALSE(scope.has_events());
  auto says_use_scope = Catch::Contains("iterator.use_scope(memory)");
  REQUIRE_THROWS_WITH(scope.get<int>("k").get(), says_use_scope);
  REQUIRE_THROWS_WITH(scope.entry("k").get(), says_use_scope);
  REQUIRE_THROWS_WITH(scope.set("k", 1).get(), says_use_scope);
  REQUIRE_THROWS_WITH(scope.set(nlohmann::json{{"k", 1}}).get(), says_use_scope);
  REQUIRE_THROWS_WITH(scope.compare_and_set("k", 0, 1).get(), says_use_scope);
  REQUIRE_THROWS_WITH(scope.increment("k").get(), says_use_scope);
  REQUIRE_THROWS_WITH(scope.erase("k").get(), says_use_scope);
  REQUIRE_THROWS_WITH(scope.list().get(), says_use_scope);
  REQUIRE_THROWS_WITH(scope.emit("e").get(), says_use_scope);
  REQUIRE_THROWS_AS(scope.get<int>("k").get(), scale::Error);

  scale::SharedMemory memory;
  scale::Scope memory_only(&memory, nullptr);
  REQUIRE_THROWS_WITH(memory_only.emit("e", 1).get(), Catch::Contains("use_scope(memory, events)"));
}
