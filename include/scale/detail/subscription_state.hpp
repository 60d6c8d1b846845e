#pragma once
// The state a Subscription handle shares with the backend that delivers to it: an ordered queue of
// pending items drained on the loop, the cancelled flag, the thread running the handler, and the
// waiters of ready(). Every backend (in-process, http://, redis://) delivers through this, so the
// guarantees of scale::Subscription hold the same way everywhere.

#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <scale/detail/loop.hpp>
#include <scale/detail/unique_function.hpp>
#include <scale/error.hpp>
#include <scale/future.hpp>

namespace scale::detail {

/// The type-erased half: cancellation, ready(), and the bookkeeping that lets cancel() wait for a
/// running handler. A backend sees it through SubscriptionQueue<T> (below).
class SubscriptionState {
 public:
  SubscriptionState() = default;
  SubscriptionState(const SubscriptionState&) = delete;
  SubscriptionState& operator=(const SubscriptionState&) = delete;
  virtual ~SubscriptionState();

  // --- the handle's side ---------------------------------------------------------------------

  /// Stops delivery. Afterwards the handler is not running and will not run again, except when
  /// called from inside the handler itself (it then returns at once; the handler finishes its
  /// current call and is never called again). Runs the backend's canceller once. Any thread.
  void cancel() noexcept;

  /// Resolves once the backend delivers to this subscription; fails with its error. Any thread,
  /// any number of times.
  Future<void> ready();

  bool cancelled() const noexcept { return m_cancelled.load(std::memory_order_acquire); }

  // --- the backend's side --------------------------------------------------------------------

  /// The backend now delivers to this subscription: resolves every ready() waiter, now and later.
  void set_ready();

  /// The subscription cannot deliver (e.g. scale::Compacted): ready() fails with `error` from now
  /// on, pending items are dropped and the handler is never called again.
  void set_error(std::exception_ptr error);

  /// What cancel() runs (once, outside every lock of this state) to unregister from the backend.
  /// Set it before the subscription is handed out; when it is already cancelled, runs it at once.
  void set_canceller(UniqueFunction canceller);

 protected:
  /// Called with m_mutex held when delivery stops for good: drop what is queued.
  virtual void clear_pending() noexcept = 0;

  // NOTE: m_mutex guards everything below but is never held while a handler runs or while the
  // canceller runs, so a handler may write to the backend (which then enqueues here) or cancel.
  mutable std::mutex m_mutex;
  std::condition_variable m_idle;
  std::atomic<bool> m_cancelled{false};
  bool m_draining = false;              // a drain is scheduled or running
  bool m_delivering = false;            // a drain is inside its delivery loop
  std::thread::id m_delivering_thread;  // which thread, so cancel() from the handler does not wait

 private:
  void resolve_waiters(std::unique_lock<std::mutex>& lock);

  bool m_ready = false;
  std::exception_ptr m_error;
  std::vector<Promise<void>> m_waiters;
  UniqueFunction m_canceller;
};

/// A subscription whose handler takes `const T&`. Items are shared (one allocation per change or
/// event, however many subscribers see it) and delivered in the order they were enqueued.
template <class T>
class SubscriptionQueue final : public SubscriptionState, public std::enable_shared_from_this<SubscriptionQueue<T>> {
 public:
  using Handler = std::function<void(const T&)>;
  using Item = std::shared_ptr<const T>;

  explicit SubscriptionQueue(Handler handler) : m_handler(std::move(handler)) {}

  /// Appends `item`. Returns true when the caller must call schedule() once it has released its
  /// own locks: a backend enqueues under its lock (so items keep the backend's order) and
  /// schedules after unlocking (so no handler can run under it when there is no loop).
  [[nodiscard]] bool enqueue(Item item) {
    std::lock_guard lock(m_mutex);
    if (cancelled() || m_failed) return false;
    m_pending.push_back(std::move(item));
    if (m_draining) return false;  // the drain already scheduled or running picks it up
    m_draining = true;
    return true;
  }

  /// Posts one drain to the loop; it delivers everything enqueued until the queue is empty, so a
  /// burst of N items costs one post.
  void schedule() {
    post([self = this->shared_from_this()] { self->drain(); });
  }

  /// enqueue + schedule, for a caller that holds no lock.
  void push(Item item) {
    if (enqueue(std::move(item))) schedule();
  }

 private:
  void clear_pending() noexcept override {
    m_failed = true;
    m_pending.clear();
  }

  // NOTE: only one drain runs at a time (m_draining stays true until it ends), which keeps the
  // order even when there is no loop and post() runs drains inline on the writers' threads.
  void drain() {
    std::vector<Item> batch;
    std::unique_lock lock(m_mutex);
    m_delivering = true;
    m_delivering_thread = std::this_thread::get_id();
    while (!m_pending.empty() && !cancelled()) {
      batch.swap(m_pending);
      lock.unlock();
      for (const Item& item : batch) {
        if (cancelled()) break;
        try {
          m_handler(*item);
        } catch (const std::exception& error) {
          log_error(std::string("a subscription handler threw (delivery continues): ") + error.what());
        } catch (...) {
          log_error("a subscription handler threw a non-standard exception (delivery continues)");
        }
      }
      batch.clear();
      lock.lock();
    }
    m_pending.clear();
    m_draining = false;
    m_delivering = false;
    m_delivering_thread = {};
    lock.unlock();
    m_idle.notify_all();
  }

  Handler m_handler;
  std::vector<Item> m_pending;
  bool m_failed = false;
};

}  // namespace scale::detail
