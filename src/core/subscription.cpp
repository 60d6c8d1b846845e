// scale::detail::SubscriptionState: cancellation and ready() for every backend's subscriptions.

#include <scale/detail/subscription_state.hpp>

namespace scale::detail {

SubscriptionState::~SubscriptionState() = default;

void SubscriptionState::cancel() noexcept {
  UniqueFunction canceller;
  std::vector<Promise<void>> waiters;
  std::unique_lock lock(m_mutex);
  if (!m_cancelled.exchange(true, std::memory_order_acq_rel)) {
    canceller = std::move(m_canceller);
    clear_pending();
    waiters.swap(m_waiters);
  }
  lock.unlock();
  for (auto& waiter : waiters)
    waiter.set_exception(std::make_exception_ptr(
        Error("scale::Subscription was cancelled before its backend delivered to it, so ready() "
              "cannot resolve; keep the Subscription alive while you wait on ready()")));
  if (canceller) {
    try {
      canceller();
    } catch (const std::exception& error) {
      log_error(std::string("unsubscribing from a backend failed: ") + error.what());
    } catch (...) {
      log_error("unsubscribing from a backend failed with a non-standard exception");
    }
  }
  lock.lock();
  // A handler that cancels its own subscription must not wait for itself.
  if (m_delivering && m_delivering_thread != std::this_thread::get_id())
    m_idle.wait(lock, [&] { return !m_delivering; });
}

Future<void> SubscriptionState::ready() {
  std::lock_guard lock(m_mutex);
  if (m_error) return make_failed_future<void>(m_error);
  if (m_ready) return make_ready_future();
  if (cancelled())
    return make_failed_future<void>(std::make_exception_ptr(
        Error("scale::Subscription::ready() called on a cancelled subscription; it will never deliver")));
  m_waiters.emplace_back();
  return m_waiters.back().get_future();
}

void SubscriptionState::set_ready() {
  std::unique_lock lock(m_mutex);
  if (m_ready || m_error) return;
  m_ready = true;
  resolve_waiters(lock);
}

void SubscriptionState::set_error(std::exception_ptr error) {
  std::unique_lock lock(m_mutex);
  if (m_error) return;
  m_error = std::move(error);
  m_ready = false;
  clear_pending();
  resolve_waiters(lock);
}

void SubscriptionState::resolve_waiters(std::unique_lock<std::mutex>& lock) {
  std::vector<Promise<void>> waiters;
  waiters.swap(m_waiters);
  std::exception_ptr error = m_error;
  lock.unlock();
  for (auto& waiter : waiters) {
    if (error)
      waiter.set_exception(error);
    else
      waiter.set_value();
  }
}

void SubscriptionState::set_canceller(UniqueFunction canceller) {
  std::unique_lock lock(m_mutex);
  if (!cancelled()) {
    m_canceller = std::move(canceller);
    return;
  }
  lock.unlock();
  canceller();
}

}  // namespace scale::detail
