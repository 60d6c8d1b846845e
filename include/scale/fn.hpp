#pragma once
/// \file scale::fn<&function>: a plain function as a function object that can be sent to other processes.

#include <functional>
#include <type_traits>
#include <utility>

namespace scale {

/// `numbers.map(scale::fn<&times_three>)`: an empty, default-constructible function object that
/// calls `Function`. A function pointer cannot travel to another process (its address means
/// nothing there); this type names the function in the type itself, so a worker rebuilds it.
template <auto Function>
struct fn_t {
  template <class... Args>
  requires std::is_invocable_v<decltype(Function), Args...> std::invoke_result_t<decltype(Function), Args...>
  operator()(Args&&... args) const { return std::invoke(Function, std::forward<Args>(args)...); }
};

/// The function object for `Function`: `scale::fn<&name>`.
template <auto Function>
inline constexpr fn_t<Function> fn{};

}  // namespace scale
