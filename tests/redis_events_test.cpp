// SharedEventEmitter("redis://..."): the shared behaviour suite against a redis-server of the
// test's own (each bus in a namespace of its own), plus what only the redis:// backend has.

#include <string>
#include <tuple>

#include <scale/shared_event_emitter.hpp>

#include "support/redis_server.hpp"

struct RedisBus {
  static scale::SharedEventEmitter make_events() {
    return scale::SharedEventEmitter(support::RedisServer::shared().url() +
                                     "?namespace=" + support::RedisServer::fresh_namespace());
  }
};
using EventBackends = std::tuple<RedisBus>;

#include "shared_event_emitter_suite.hpp"

#include <chrono>
#include <thread>

TEST_CASE("redis:// subscriptions are made again after the server restarts", "[events][redis]") {
  scale::Runtime runtime;
  support::RedisServer server;
  scale::SharedEventEmitter events(server.url());
  auto recorder = std::make_shared<events_suite::Recorder>();
  auto subscription = events.on("e", events_suite::into(recorder));
  subscription.ready().get();
  events.emit("e", 1).get();
  REQUIRE(recorder->wait_for(1));
  server.stop();
  server.start();
  // At most once: emits before the subscriber is back are lost, so emit until one arrives.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (recorder->size() < 2 && std::chrono::steady_clock::now() < deadline) {
    try {
      events.emit("e", 2).get();
    } catch (const scale::ConnectionError&) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(recorder->size() >= 2);
  REQUIRE(recorder->items()[1] == 2);
}
