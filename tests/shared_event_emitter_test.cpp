// SharedEventEmitter on the in-process bus: the shared behaviour suite plus what only the
// in-process bus has (separate buses per default-constructed emitter, URL dispatch).

#include <string>
#include <tuple>

#include <scale/shared_event_emitter.hpp>

struct InProcessBus {
  static scale::SharedEventEmitter make_events() { return scale::SharedEventEmitter(); }
};
using EventBackends = std::tuple<InProcessBus>;

#include "shared_event_emitter_suite.hpp"

TEST_CASE("each default-constructed SharedEventEmitter is a bus of its own", "[events]") {
  scale::Runtime runtime;
  scale::SharedEventEmitter a;
  scale::SharedEventEmitter b;
  auto on_a = a.once("e");
  auto on_b = b.once("e");
  b.emit("e", 2).get();
  a.emit("e", 1).get();
  REQUIRE(on_a.get() == 1);
  REQUIRE(on_b.get() == 2);
}

TEST_CASE("an emit with no subscriber completes and is not kept for later ones", "[events]") {
  scale::Runtime runtime;
  scale::SharedEventEmitter events;
  events.emit("early", 1).get();
  auto next = events.once("early");
  events.emit("early", 2).get();
  REQUIRE(next.get() == 2);
}

TEST_CASE("a SharedEventEmitter URL that is malformed or has an unknown scheme throws a clear error", "[events]") {
  REQUIRE_THROWS_WITH(scale::SharedEventEmitter("http://localhost:port"),
                      Catch::Contains("http://localhost:port") && Catch::Contains("port must be a number"));
  REQUIRE_THROWS_WITH(scale::SharedEventEmitter("redis://localhost:port"), Catch::Contains("redis://"));
  REQUIRE_THROWS_WITH(scale::SharedEventEmitter(std::string("nope")), Catch::Contains("unsupported URL"));
}
