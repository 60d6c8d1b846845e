// RoutedQueue: chunks by requirement class, oldest first among those that may start.

#include <catch2/catch.hpp>

#include "core/resource_ledger.hpp"
#include "core/routed_queue.hpp"

#include <memory>
#include <optional>
#include <vector>

using scale::detail::Resources;
using scale::detail::RoutedQueue;

namespace {

const Resources none{};
const Resources gpu{{"gpu", 1}};
const Resources two_gpus{{"gpu", 2}};

auto anything = [](const Resources&, const int&) { return true; };
auto nothing_classed = [](const Resources&, const int&) { return false; };

std::vector<int> drain(RoutedQueue<int>& queue) {
  std::vector<int> order;
  while (auto item = queue.take_next(anything)) order.push_back(*item);
  return order;
}

}  // namespace

TEST_CASE("a routed queue with no classes is one first-in, first-out queue", "[routing][routed_queue]") {
  RoutedQueue<int> queue;
  REQUIRE(queue.empty());
  REQUIRE_FALSE(queue.take_next(anything).has_value());
  for (int i = 0; i < 5; ++i) queue.push_back(i, none);
  queue.push_front(-1, none);
  REQUIRE(queue.size() == 6);
  REQUIRE_FALSE(queue.has_classes());
  REQUIRE(drain(queue) == std::vector<int>{-1, 0, 1, 2, 3, 4});
  REQUIRE(queue.empty());
}

TEST_CASE("a routed queue takes the oldest chunk that may start, past a class that may not", "[routing][routed_queue]") {
  RoutedQueue<int> queue;
  queue.push_back(1, gpu);
  queue.push_back(2, none);
  queue.push_back(3, gpu);
  queue.push_back(4, none);
  REQUIRE(queue.has_classes());
  // The gpu class may not start: the free chunks behind it go ahead, in order.
  REQUIRE(queue.take_next(nothing_classed) == 2);
  REQUIRE(queue.take_next(nothing_classed) == 4);
  REQUIRE_FALSE(queue.take_next(nothing_classed).has_value());
  REQUIRE(queue.size() == 2);
  // Once it may, its chunks come in order, and the class goes when it empties.
  REQUIRE(queue.take_next(anything) == 1);
  queue.push_back(5, none);
  REQUIRE(queue.take_next(anything) == 3);
  REQUIRE_FALSE(queue.has_classes());
  REQUIRE(queue.take_next(anything) == 5);
  REQUIRE(queue.empty());
}

TEST_CASE("a routed queue asks each class about its own amounts and front", "[routing][routed_queue]") {
  RoutedQueue<int> queue;
  queue.push_back(1, two_gpus);
  queue.push_back(2, gpu);
  queue.push_back(3, two_gpus);
  std::vector<int> asked;
  auto only_one_gpu_free = [&](const Resources& resources, const int& front) {
    asked.push_back(front);
    return resources.at("gpu") <= 1;
  };
  // gpu=2 waits; gpu=1 fits in what is left and is not held up behind it.
  REQUIRE(queue.take_next(only_one_gpu_free) == 2);
  REQUIRE(asked == std::vector<int>{1, 2});
  REQUIRE_FALSE(queue.take_next(only_one_gpu_free).has_value());
  REQUIRE(queue.take_next(anything) == 1);
  REQUIRE(queue.take_next(anything) == 3);
}

TEST_CASE("a chunk given back goes before every other of its class and the free ones", "[routing][routed_queue]") {
  RoutedQueue<int> queue;
  queue.push_back(1, none);
  queue.push_back(2, gpu);
  queue.push_front(0, gpu);
  REQUIRE(drain(queue) == std::vector<int>{0, 1, 2});
}

TEST_CASE("take_first finds a chunk anywhere, take_all_if withdraws some, startable counts what may start",
          "[routing][routed_queue]") {
  RoutedQueue<int> queue;
  for (int i = 0; i < 4; ++i) queue.push_back(i, none);
  for (int i = 10; i < 14; ++i) queue.push_back(i, gpu);
  for (int i = 20; i < 22; ++i) queue.push_back(i, two_gpus);
  REQUIRE(queue.take_first([](const Resources& r, const int& item) { return !r.empty() && item % 2 == 1; }) == 11);
  REQUIRE(queue.take_first([](const Resources&, const int& item) { return item == 21; }) == 21);
  REQUIRE_FALSE(queue.take_first([](const Resources&, const int& item) { return item == 99; }).has_value());
  REQUIRE(queue.size() == 8);
  // Two gpus free: any number of free chunks, two of gpu=1, one of gpu=2.
  auto room = [](const Resources& resources, std::size_t queued) {
    return std::min<std::size_t>(queued, static_cast<std::size_t>(2 / resources.at("gpu")));
  };
  REQUIRE(queue.startable(room) == 4 + 2 + 1);
  const std::vector<int> even = queue.take_all_if([](const int& item) { return item % 2 == 0; });
  REQUIRE(even == std::vector<int>{0, 2, 10, 12, 20});
  REQUIRE(queue.size() == 3);
  REQUIRE(queue.has_classes());
  REQUIRE(queue.take_all() == std::vector<int>{1, 3, 13});
  REQUIRE(queue.empty());
  REQUIRE_FALSE(queue.has_classes());
}

TEST_CASE("a routed queue holds move-only chunks", "[routing][routed_queue]") {
  RoutedQueue<std::unique_ptr<int>> queue;
  queue.push_back(std::make_unique<int>(1), gpu);
  queue.push_back(std::make_unique<int>(2), none);
  auto first = queue.take_next([](const Resources&, const std::unique_ptr<int>&) { return true; });
  REQUIRE(**first == 1);
  REQUIRE(queue.take_all().size() == 1);
}
