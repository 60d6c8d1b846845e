#pragma once
/// \file scale::when_all: one Future for many, failing as soon as any of them fails.

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <scale/future.hpp>

namespace scale {

namespace detail {

template <class T>
struct AllOfVector {
  explicit AllOfVector(std::size_t n) : slots(n), remaining(n) {}
  std::vector<std::optional<Stored<T>>> slots;
  std::atomic<std::size_t> remaining;
  Promise<std::conditional_t<std::is_void_v<T>, void, std::vector<T>>> promise;

  void finish_one() {
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if constexpr (std::is_void_v<T>) {
      promise.set_value();
    } else {
      std::vector<T> values;
      values.reserve(slots.size());
      for (auto& slot : slots) values.push_back(std::move(*slot));
      promise.set_value(std::move(values));
    }
  }
};

template <class T>
Detached all_watch(Future<T> future, std::shared_ptr<AllOfVector<T>> all, std::size_t index) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(future);
      all->slots[index].emplace();
    } else {
      all->slots[index].emplace(co_await std::move(future));
    }
    all->finish_one();
  } catch (...) {
    all->promise.set_exception(std::current_exception());
  }
}

}  // namespace detail

/// Completes with every value, in the order given (Future<void> for void inputs);
/// fails with the first error to arrive.
template <class T>
auto when_all(std::vector<Future<T>> futures) {
  auto all = std::make_shared<detail::AllOfVector<T>>(futures.size());
  auto result = all->promise.get_future();
  if (futures.empty()) {
    if constexpr (std::is_void_v<T>)
      all->promise.set_value();
    else
      all->promise.set_value(std::vector<T>{});
  }
  for (std::size_t i = 0; i < futures.size(); ++i) detail::all_watch(std::move(futures[i]), all, i);
  return result;
}

/// Completes with a tuple of every value (std::monostate for a Future<void>);
/// fails with the first error to arrive.
template <class... Ts>
Future<std::tuple<detail::Stored<Ts>...>> when_all(Future<Ts>... futures) {
  std::vector<Future<void>> parts;
  parts.reserve(sizeof...(Ts));
  auto values = std::make_shared<std::tuple<std::optional<detail::Stored<Ts>>...>>();
  auto store = []<class T, class Slot>(Future<T> future, std::shared_ptr<Slot> /*keeps slot alive*/,
                                       std::optional<detail::Stored<T>>& slot) -> Future<void> {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(future);
      slot.emplace();
    } else {
      slot.emplace(co_await std::move(future));
    }
  };
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (parts.push_back(store(std::move(futures), values, std::get<I>(*values))), ...);
  }
  (std::index_sequence_for<Ts...>{});
  return when_all(std::move(parts)).then([values]() {
    return std::apply([](auto&... slot) { return std::tuple<detail::Stored<Ts>...>(std::move(*slot)...); }, *values);
  });
}

}  // namespace scale
