#pragma once
// The shared state behind a Future: a result slot, one consumer, and a way to wake it.

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <exception>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

#include <scale/detail/loop.hpp>

namespace scale::detail {

/// `void` stored as an empty value, so State<T> needs no specialization.
template <class T>
using Stored = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

class StateBase;

/// Told when a state completes (StateBase::set_waker): how a thread that does other work while it
/// waits (a pool thread running nested chunks) learns that its wait is over.
class StateWaker {
 public:
  /// Called under the state's lock, on the completing thread; must return at once and must not
  /// touch the state.
  virtual void state_completed() noexcept = 0;

 protected:
  ~StateWaker() = default;
};

/// What Future::get() calls instead of blocking, on a thread that has useful work to do while it
/// waits: a ThreadPoolManager thread runs the queued chunks nested in the one it is running
/// (src/core/help_while_waiting.hpp). It returns once `state` is complete.
class WaitHelper {
 public:
  virtual void wait_for(StateBase& state) = 0;

 protected:
  ~WaitHelper() = default;
};

/// This thread's WaitHelper, or null (every thread but a pool thread): Future::get() reads it once.
inline constinit thread_local WaitHelper* t_wait_helper = nullptr;

class StateBase {
 public:
  StateBase() = default;
  StateBase(const StateBase&) = delete;
  StateBase& operator=(const StateBase&) = delete;
  virtual ~StateBase();

  bool is_ready() const noexcept { return m_ready.load(std::memory_order_acquire); }

  /// Completes with an error. Returns false when already complete (the error is dropped).
  bool fail(std::exception_ptr error) noexcept {
    std::unique_lock lock(m_mutex);
    if (m_done) return false;
    m_error = std::move(error);
    finish(lock);
    return true;
  }

  /// Claims the single consumer slot; a second consumer is a programming error.
  void consume() {
    if (m_consumed.exchange(true, std::memory_order_acq_rel))
      throw std::logic_error("scale::Future consumed twice: a Future delivers its value once (co_await, then or get); "
                             "keep the value, or use when_all to wait for several");
  }

  /// Sets the coroutine to resume on completion: through the loop, or (`where_completed`) on the
  /// thread that completes the state. Returns false when already complete (resume now).
  bool set_continuation(std::coroutine_handle<> handle, bool where_completed = false) noexcept {
    std::lock_guard lock(m_mutex);
    if (m_done) return false;
    m_continuation = handle;
    m_resume_where_completed = where_completed;
    return true;
  }

  /// Registers `waker` to be told when the state completes. Returns false (and registers nothing)
  /// when already complete. One waker at a time: the single consumer's.
  bool set_waker(StateWaker* waker) noexcept {
    std::lock_guard lock(m_mutex);
    if (m_done) return false;
    m_waker = waker;
    return true;
  }
  /// Unregisters the waker. Once this returns no call to it is running or will start, so the
  /// waker may be destroyed.
  void clear_waker() noexcept {
    std::lock_guard lock(m_mutex);
    m_waker = nullptr;
  }

  /// Blocks the calling thread until complete.
  void wait() {
    std::unique_lock lock(m_mutex);
    ++m_waiters;
    m_cv.wait(lock, [&] { return m_done; });
    --m_waiters;
  }

  // Shutdown registry bookkeeping, guarded by the registry's mutex.
  std::list<std::shared_ptr<StateBase>>::iterator m_registry_position{};
  bool m_tracked = false;

 protected:
  // NOTE: the value (if any) is written under m_mutex before finish(); readers see m_ready with
  // acquire ordering, or take m_mutex, so the value is visible to whoever consumes it. The waker
  // is called under m_mutex, after m_ready is set, so that clear_waker (which takes m_mutex)
  // cannot return while it runs: the waker lives on the waiting thread's stack.
  void finish(std::unique_lock<std::mutex>& lock) noexcept {
    m_done = true;
    m_ready.store(true, std::memory_order_release);
    auto continuation = std::exchange(m_continuation, {});
    if (m_waiters > 0) m_cv.notify_all();
    if (m_waker) m_waker->state_completed();
    const bool here = m_resume_where_completed;
    lock.unlock();
    untrack(this);
    if (!continuation) return;
    if (here)
      continuation.resume();
    else
      post(continuation);
  }

  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::atomic<bool> m_ready{false};
  std::atomic<bool> m_consumed{false};
  bool m_done = false;
  int m_waiters = 0;
  std::exception_ptr m_error;
  std::coroutine_handle<> m_continuation;
  bool m_resume_where_completed = false;
  StateWaker* m_waker = nullptr;
};

template <class T>
class State final : public StateBase {
 public:
  /// Completes with a value. Returns false when already complete (the value is dropped).
  template <class... Args>
  bool set_value(Args&&... args) {
    std::unique_lock lock(m_mutex);
    if (m_done) return false;
    m_value.emplace(std::forward<Args>(args)...);
    finish(lock);
    return true;
  }

  /// Moves the result out (or rethrows the error). Only after completion, by the one consumer.
  T take() {
    if (m_error) std::rethrow_exception(m_error);
    if constexpr (!std::is_void_v<T>) return std::move(*m_value);
  }

 private:
  std::optional<Stored<T>> m_value;
};

}  // namespace scale::detail
