#pragma once
/// \file scale::Subscription: the RAII handle returned by SharedMemory::watch and SharedEventEmitter::on.

#include <memory>
#include <utility>

#include <scale/detail/subscription_state.hpp>
#include <scale/error.hpp>
#include <scale/future.hpp>

namespace scale {

/// Keeps a watch or event handler subscribed. Destroying it (or cancel()) unsubscribes; once that
/// returns, the handler is not running and will not run again. Called from inside the handler
/// itself it returns at once (the current call finishes; no further call follows). Move-only.
class [[nodiscard]] Subscription {
 public:
  /// An empty handle: subscribed to nothing.
  Subscription() noexcept = default;
  explicit Subscription(std::shared_ptr<detail::SubscriptionState> state) noexcept : m_state(std::move(state)) {}
  Subscription(Subscription&&) noexcept = default;
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      cancel();
      m_state = std::move(other.m_state);
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { cancel(); }

  /// Unsubscribes; waits for a handler running on another thread. Safe to call more than once.
  void cancel() noexcept {
    if (auto state = std::move(m_state)) state->cancel();
  }

  /// Resolves once the backend delivers to this subscription (in-process: at once); fails with the
  /// subscription's error, e.g. scale::Compacted for a watch from a revision no longer kept.
  Future<void> ready() const {
    if (!m_state)
      return make_failed_future<void>(
          std::make_exception_ptr(Error("scale::Subscription::ready() called on an empty or cancelled Subscription; "
                                        "call it on the handle returned by watch() or on()")));
    return m_state->ready();
  }

  /// True until cancelled (or moved from).
  bool active() const noexcept { return m_state && !m_state->cancelled(); }

 private:
  std::shared_ptr<detail::SubscriptionState> m_state;
};

}  // namespace scale
