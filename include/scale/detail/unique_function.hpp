#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace scale::detail {

/// A move-only `void()` callable (std::function needs copyable targets; ours often own a Promise).
class UniqueFunction {
 public:
  UniqueFunction() = default;
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, UniqueFunction> && std::is_invocable_v<F&>) UniqueFunction(F&& f)
      : m_impl(std::make_unique<Impl<std::decay_t<F>>>(std::forward<F>(f))) {}

  explicit operator bool() const noexcept { return static_cast<bool>(m_impl); }
  void operator()() { m_impl->call(); }

 private:
  struct Base {
    virtual ~Base() = default;
    virtual void call() = 0;
  };
  template <class F>
  struct Impl final : Base {
    template <class G>
    explicit Impl(G&& g) : f(std::forward<G>(g)) {}
    void call() override { f(); }
    F f;
  };
  std::unique_ptr<Base> m_impl;
};

}  // namespace scale::detail
