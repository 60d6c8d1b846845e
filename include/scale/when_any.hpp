#pragma once
/// \file scale::when_any: the first of several Futures to complete.

#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <scale/future.hpp>

namespace scale {

namespace detail {

template <class R>
struct AnyOf {
  Promise<R> promise;
};

template <class T, class R, class Make>
Detached any_watch(Future<T> future, std::shared_ptr<AnyOf<R>> any, Make make) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(future);
      if (!any->promise.ready()) any->promise.set_value(make(std::monostate{}));
    } else {
      auto value = co_await std::move(future);
      if (!any->promise.ready()) any->promise.set_value(make(std::move(value)));
    }
  } catch (...) {
    any->promise.set_exception(std::current_exception());
  }
}

}  // namespace detail

/// Completes with {index, value} of the first Future to complete (for void: the index alone),
/// or fails with its error. The others keep running; their results are dropped.
template <class T>
auto when_any(std::vector<Future<T>> futures) {
  using R = std::conditional_t<std::is_void_v<T>, std::size_t, std::pair<std::size_t, T>>;
  if (futures.empty())
    return make_failed_future<R>(
        std::make_exception_ptr(std::invalid_argument("scale::when_any needs at least one Future")));
  auto any = std::make_shared<detail::AnyOf<R>>();
  auto result = any->promise.get_future();
  for (std::size_t i = 0; i < futures.size(); ++i) {
    detail::any_watch(std::move(futures[i]), any, [i](auto&& value) -> R {
      if constexpr (std::is_void_v<T>)
        return i;
      else
        return R{i, std::forward<decltype(value)>(value)};
    });
  }
  return result;
}

/// Completes with a variant whose index() is the first Future to complete, holding its value
/// (std::monostate for a Future<void>), or fails with its error.
template <class... Ts>
requires(sizeof...(Ts) > 0) Future<std::variant<detail::Stored<Ts>...>> when_any(Future<Ts>... futures) {
  using R = std::variant<detail::Stored<Ts>...>;
  auto any = std::make_shared<detail::AnyOf<R>>();
  auto result = any->promise.get_future();
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (detail::any_watch(
         std::move(futures), any,
         [](auto&& value) -> R { return R(std::in_place_index<I>, std::forward<decltype(value)>(value)); }),
     ...);
  }
  (std::index_sequence_for<Ts...>{});
  return result;
}

}  // namespace scale
