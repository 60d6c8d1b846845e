#pragma once
// The SharedEventEmitter behaviour suite, run against every backend. A test file defines its
// backend factories and the type list `EventBackends` before including this header, e.g.
//
//   struct InProcessBus {
//     static scale::SharedEventEmitter make_events();  // a fresh bus nobody else uses
//   };
//   using EventBackends = std::tuple<InProcessBus>;
//   #include "shared_event_emitter_suite.hpp"
//
// Handlers run on the loop, where Catch2's assertions must not be used: they record, and the test
// thread waits on a condition variable (its timeout only turns a hang into a failure).

#include <catch2/catch.hpp>

#include "support/recorder.hpp"

#include <nlohmann/json.hpp>

#include <scale/detail/loop.hpp>
#include <scale/runtime.hpp>
#include <scale/scope.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>
#include <scale/subscription.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace events_suite {

using Recorder = support::Recorder<nlohmann::json>;
using support::flush;
using support::into;

inline bool g_inside_on = false;  // only touched on the loop thread

/// On the loop: subscribes, emits, and awaits once(), noting whether a handler ran inside on().
inline scale::Future<nlohmann::json> subscribe_on_the_loop(scale::SharedEventEmitter events,
                                                           std::shared_ptr<std::atomic<bool>> called_inside,
                                                           std::shared_ptr<scale::Subscription> out) {
  g_inside_on = true;
  *out = events.on("loop", [called_inside](const nlohmann::json&) {
    if (g_inside_on) called_inside->store(true);
  });
  g_inside_on = false;
  co_await out->ready();
  auto next = events.once("loop");
  co_await events.emit("loop", 7);
  co_return co_await std::move(next);
}

}  // namespace events_suite

TEMPLATE_LIST_TEST_CASE("a subscriber receives each emitted payload on the loop thread", "[events][subscription]",
                        EventBackends) {
  scale::Runtime runtime;
  scale::SharedEventEmitter events = TestType::make_events();
  auto recorder = std::make_shared<events_suite::Recorder>();
  auto subscription = events.on("greeting", events_suite::into(recorder));
  subscription.ready().get();
  events.emit("greeting", std::string("hello")).get();
  events.emit("greeting", nlohmann::json{{"to", "world"}, {"times", 2}}).get();
  events.emit("greeting").get();
  REQUIRE(recorder->wait_for(3));
  auto payloads = recorder->items();
  REQUIRE(payloads[0] == "hello");
  REQUIRE(payloads[1]["times"] == 2);
  REQUIRE(payloads[2].is_null());
  REQUIRE(recorder->off_loop() == 0);
}

TEMPLATE_LIST_TEST_CASE("event names match exactly", "[events]", EventBackends) {
  scale::Runtime runtime;
  scale::SharedEventEmitter events = TestType::make_events();
  auto exact = std::make_shared<events_suite::Recorder>();
  auto longer = std::make_shared<events_suite::Recorder>();
  auto a = events.on("job", events_suite::into(exact));
  auto b = events.on("job/done", events_suite::into(longer));
  a.ready().get();
  b.ready().get();
  events.emit("job/done", 1).get();
  events.emit("jo", 2).get();
  events.emit("job", 3).get();
  REQUIRE(exact->wait_for(1));
  REQUIRE(longer->wait_for(1));
  events_suite::flush(runtime);
  REQUIRE(exact->items() == std::vector<nlohmann::json>{nlohmann::json(3)});
  REQUIRE(longer->items() == std::vector<nlohmann::json>{nlohmann::json(1)});
}

TEMPLATE_LIST_TEST_CASE("ten thousand emits reach every subscriber in the order emitted", "[events]", EventBackends) {
  scale::Runtime runtime;
  scale::SharedEventEmitter events = TestType::make_events();
  auto first = std::make_shared<events_suite::Recorder>();
  auto second = std::make_shared<events_suite::Recorder>();
  auto a = events.on("tick", events_suite::into(first));
  auto b = events.on("tick", events_suite::into(second));
  a.ready().get();
  b.ready().get();
  constexpr int count = 10'000;
  for (int i = 0; i < count; ++i) events.emit("tick", i).get();
  REQUIRE(first->wait_for(count));
  REQUIRE(second->wait_for(count));
  for (const auto& recorder : {first, second}) {
    auto payloads = recorder->items();
    REQUIRE(payloads.size() == count);
    bool ordered = true;
    for (int i = 0; i < count; ++i)
      if (payloads[i] != i) ordered = false;
    REQUIRE(ordered);
  }
}

TEMPLATE_LIST_TEST_CASE("once resolves with the next emit of its event only", "[events]", EventBackends) {
  scale::Runtime runtime;
  scale::SharedEventEmitter events = TestType::make_events();
  auto next = events.once("done");
  auto other = events.once("other");
  events.emit("done", 1).get();
  events.emit("done", 2).get();
  REQUIRE(next.get() == 1);
  REQUIRE_FALSE(other.ready());
  events.emit("other", std::string("x")).get();
  REQUIRE(other.get() == "x");
  // Awaited from a coroutine on the loop, and handlers never run inside on().
  auto called_inside = std::make_shared<std::atomic<bool>>(false);
  auto subscription = std::make_shared<scale::Subscription>();
  auto value = runtime.run([&] { return events_suite::subscribe_on_the_loop(events, called_inside, subscription); });
  REQUIRE(value == 7);
  events_suite::flush(runtime);
  REQUIRE_FALSE(called_inside->load());
}

TEMPLATE_LIST_TEST_CASE("cancelling or destroying an event Subscription stops delivery", "[events][subscription]",
                        EventBackends) {
  scale::Runtime runtime;
  scale::SharedEventEmitter events = TestType::make_events();
  auto cancelled = std::make_shared<events_suite::Recorder>();
  auto dropped = std::make_shared<events_suite::Recorder>();
  auto witness = std::make_shared<events_suite::Recorder>();
  auto keep = events.on("e", events_suite::into(witness));
  auto to_cancel = events.on("e", events_suite::into(cancelled));
  keep.ready().get();
  to_cancel.ready().get();
  {
    auto to_drop = events.on("e", events_suite::into(dropped));
    to_drop.ready().get();
    events.emit("e", 1).get();
    REQUIRE(dropped->wait_for(1));
    REQUIRE(cancelled->wait_for(1));
  }
  to_cancel.cancel();
  REQUIRE_FALSE(to_cancel.active());
  events.emit("e", 2).get();
  REQUIRE(witness->wait_for(2));
  events_suite::flush(runtime);
  REQUIRE(cancelled->items().size() == 1);
  REQUIRE(dropped->items().size() == 1);
}

TEMPLATE_LIST_TEST_CASE("cancel from another thread waits for a running event handler", "[events][subscription]",
                        EventBackends) {
  scale::Runtime runtime;
  scale::SharedEventEmitter events = TestType::make_events();
  struct Shared {
    std::atomic<int> calls{0};
    std::atomic<bool> entered{false};
    std::atomic<bool> release{false};
    std::atomic<bool> finished{false};
  };
  auto shared = std::make_shared<Shared>();
  auto subscription = events.on("work", [shared](const nlohmann::json&) {
    if (shared->calls.fetch_add(1) == 0) {
      shared->entered = true;
      while (!shared->release.load()) std::this_thread::yield();
      std::this_thread::sleep_for(std::chrono::milliseconds(30));  // work that outlasts the release
      shared->finished = true;
    }
  });
  subscription.ready().get();
  events.emit("work").get();
  while (!shared->entered.load()) std::this_thread::yield();
  events.emit("work").get();
  bool finished_when_cancel_returned = false;
  std::thread canceller([&] {
    shared->release = true;
    subscription.cancel();
    finished_when_cancel_returned = shared->finished.load();
  });
  canceller.join();
  REQUIRE(finished_when_cancel_returned);
  events.emit("work").get();
  events_suite::flush(runtime);
  REQUIRE(shared->calls.load() == 1);
}

TEMPLATE_LIST_TEST_CASE("a handler that cancels its own subscription neither deadlocks nor runs again",
                        "[events][subscription]", EventBackends) {
  scale::Runtime runtime;
  scale::SharedEventEmitter events = TestType::make_events();
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto holder = std::make_shared<scale::Subscription>();
  *holder = events.on("e", [calls, holder](const nlohmann::json&) {
    calls->fetch_add(1);
    holder->cancel();
  });
  holder->ready().get();
  auto witness = std::make_shared<events_suite::Recorder>();
  auto keep = events.on("e", events_suite::into(witness));
  keep.ready().get();
  for (int i = 0; i < 5; ++i) events.emit("e", i).get();
  REQUIRE(witness->wait_for(5));
  events_suite::flush(runtime);
  REQUIRE(calls->load() == 1);
}

TEMPLATE_LIST_TEST_CASE("many threads emit at once and each thread's events keep their order", "[events]",
                        EventBackends) {
  scale::Runtime runtime;
  scale::SharedEventEmitter events = TestType::make_events();
  auto recorder = std::make_shared<events_suite::Recorder>();
  auto subscription = events.on("n", events_suite::into(recorder));
  subscription.ready().get();
  constexpr int threads = 8;
  constexpr int per_thread = 1000;
  std::vector<std::thread> emitters;
  for (int t = 0; t < threads; ++t)
    emitters.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) events.emit("n", nlohmann::json{{"t", t}, {"i", i}}).get();
    });
  // Subscribing and unsubscribing meanwhile does not disturb the others.
  for (int i = 0; i < 100; ++i) {
    auto transient = events.on("n", [](const nlohmann::json&) {});
    transient.ready().get();
  }
  for (auto& emitter : emitters) emitter.join();
  REQUIRE(recorder->wait_for(threads * per_thread));
  std::vector<int> next(threads, 0);
  bool ordered = true;
  for (const auto& payload : recorder->items()) {
    int t = payload["t"];
    if (payload["i"] != next[t]) ordered = false;
    ++next[t];
  }
  REQUIRE(ordered);
  REQUIRE(recorder->off_loop() == 0);
}

TEMPLATE_LIST_TEST_CASE("copies of a SharedEventEmitter share one bus and Scope emits on it", "[events][scope]",
                        EventBackends) {
  scale::Runtime runtime;
  scale::SharedEventEmitter events = TestType::make_events();
  scale::SharedEventEmitter copy = events;
  auto next = copy.once("from-scope");
  scale::SharedMemory memory;
  scale::Scope scope(&memory, &events);
  REQUIRE(scope.has_events());
  scope.emit("from-scope", nlohmann::json{{"ok", true}}).get();
  REQUIRE(next.get()["ok"] == true);
}
