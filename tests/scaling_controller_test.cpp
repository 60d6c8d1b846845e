// ScalingController: the one rule behind ScalingPolicy (thread pool, process pool, cluster demand).

#include <catch2/catch.hpp>

#include <chrono>
#include <stdexcept>

#include "core/scaling_controller.hpp"

using namespace std::chrono_literals;
using scale::ScalingPolicy;
using scale::detail::ScalingController;
using Clock = ScalingController::Clock;

TEST_CASE("adapt grows at once when the backlog per worker exceeds its target", "[scaling]") {
  ScalingController controller(ScalingPolicy{.min = 0, .max = 8}, 16);
  const auto t0 = Clock::now();
  REQUIRE(controller.step(t0, 0, 0) == 0);
  REQUIRE(controller.step(t0, 0, 1) == 1);   // one chunk of backlog: one worker
  REQUIRE(controller.step(t0, 1, 7) == 4);   // 7 chunks, 2 per worker: 4
  REQUIRE(controller.step(t0, 4, 100) == 8); // capped by max
}

TEST_CASE("scale_up_after makes a higher count wait for its window", "[scaling]") {
  ScalingController controller(ScalingPolicy{.min = 1, .max = 8, .scale_up_after = 100ms}, 16);
  const auto t0 = Clock::now();
  REQUIRE(controller.step(t0, 1, 10) == 1);
  REQUIRE(controller.next_deadline() == t0 + 100ms);
  REQUIRE(controller.step(t0 + 50ms, 1, 10) == 1);
  REQUIRE(controller.step(t0 + 100ms, 1, 10) == 5);
  REQUIRE_FALSE(controller.next_deadline().has_value());
}

TEST_CASE("adapt shrinks only after the whole window, straight to the window's highest want", "[scaling]") {
  ScalingController controller(ScalingPolicy{.min = 1, .max = 8, .scale_down_after = 1s}, 16);
  const auto t0 = Clock::now();
  REQUIRE(controller.step(t0, 8, 0) == 8);  // the window opens
  REQUIRE(controller.next_deadline() == t0 + 1s);
  REQUIRE(controller.step(t0 + 400ms, 8, 6) == 8);  // wants 3 for a moment
  REQUIRE(controller.step(t0 + 999ms, 8, 0) == 8);
  REQUIRE(controller.step(t0 + 1s, 8, 0) == 3);  // the peak of the window, not min
  // A want at or above the count resets the window.
  REQUIRE(controller.step(t0 + 1100ms, 3, 0) == 3);
  REQUIRE(controller.step(t0 + 1200ms, 3, 6) == 3);
  REQUIRE(controller.step(t0 + 2150ms, 3, 0) == 3);  // a new window opens here
  REQUIRE(controller.step(t0 + 3150ms, 3, 0) == 1);
}

TEST_CASE("a step never grows and shrinks at once: growing closes the down window", "[scaling]") {
  ScalingController controller(ScalingPolicy{.min = 0, .max = 8, .scale_down_after = 1s}, 16);
  const auto t0 = Clock::now();
  REQUIRE(controller.step(t0, 4, 0) == 4);            // down window opens
  REQUIRE(controller.step(t0 + 500ms, 4, 12) == 6);   // up at once; the down window is gone
  REQUIRE(controller.step(t0 + 1s, 6, 0) == 6);       // a new down window opens only now
  REQUIRE(controller.step(t0 + 1999ms, 6, 0) == 6);
  REQUIRE(controller.step(t0 + 2s, 6, 0) == 0);
}

TEST_CASE("min and the manager's cap bound every target", "[scaling]") {
  ScalingController capped(ScalingPolicy{.min = 2, .max = 0}, 3);  // max 0: the manager's cap
  REQUIRE(capped.max() == 3);
  REQUIRE(capped.wanted(0) == 2);
  REQUIRE(capped.wanted(100) == 3);
  ScalingController min_over_cap(ScalingPolicy{.min = 6, .max = 8}, 4);
  REQUIRE(min_over_cap.wanted(0) == 4);
}

TEST_CASE("a ScalingPolicy that cannot work is refused naming its field", "[scaling]") {
  auto message = [](ScalingPolicy policy) {
    try {
      ScalingController controller(policy, 8);
    } catch (const std::invalid_argument& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(message({.min = 5, .max = 2}), Catch::Contains("min (5) is above max (2)"));
  CHECK_THAT(message({.min = 0, .max = 4, .backlog_per_worker = 0}), Catch::Contains("backlog_per_worker"));
  CHECK_THAT(message({.min = 0, .max = 4, .scale_down_after = 0ms}), Catch::Contains("scale_down_after"));
  CHECK_THAT(message({.min = 0, .max = 4, .scale_up_after = -1ms}), Catch::Contains("scale_up_after"));
  CHECK(message({.min = 3, .max = 3, .scale_down_after = 0ms}) == "accepted");  // no window needed
}

TEST_CASE("after shrinking to a window's peak, a lower want opens the next window at once", "[scaling]") {
  ScalingController controller(ScalingPolicy{.min = 0, .max = 8, .scale_down_after = 1s}, 16);
  const auto t0 = Clock::now();
  REQUIRE(controller.step(t0, 8, 16) == 8);
  REQUIRE(controller.step(t0 + 1ms, 8, 6) == 8);     // window opens wanting 3
  REQUIRE(controller.step(t0 + 500ms, 8, 0) == 8);   // now wants 0; the window's peak stays 3
  REQUIRE(controller.step(t0 + 1001ms, 8, 0) == 3);  // shrinks to the peak ...
  REQUIRE(controller.next_deadline() == t0 + 2001ms);  // ... and the next window is already open
  REQUIRE(controller.step(t0 + 2001ms, 3, 0) == 0);
  REQUIRE_FALSE(controller.next_deadline().has_value());
}
