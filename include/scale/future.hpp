#pragma once
/// \file scale::Future<T>, the one asynchronous type, and scale::Promise<T>, its producer.

#include <concepts>
#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <scale/detail/loop.hpp>
#include <scale/detail/recycling_allocator.hpp>
#include <scale/detail/state.hpp>
#include <scale/error.hpp>

namespace scale {

template <class T = void>
class Future;

namespace detail {

template <class T>
struct IsFuture : std::false_type {};
template <class T>
struct IsFuture<Future<T>> : std::true_type {};
template <class T>
inline constexpr bool is_future_v = IsFuture<std::remove_cvref_t<T>>::value;

/// Future<U> → U; any other type → itself.
template <class T>
struct Unwrap {
  using type = T;
};
template <class T>
struct Unwrap<Future<T>> {
  using type = T;
};
template <class T>
using unwrap_t = typename Unwrap<std::remove_cvref_t<T>>::type;

template <class T>
class FuturePromise;

/// is_ready(), for a caller that polls: a Promise's state made before a Runtime shutdown and
/// still pending fails with Stopped first, as the shutdown would have failed it.
inline bool ready_or_stopped(StateBase& state) noexcept {
  if (state.is_ready()) return true;
  if (!state.m_registry.when_waited || !stopped_since_made(state)) return false;
  state.fail(std::make_exception_ptr(Stopped()));
  return true;
}

/// A new shared state, in a recycled block (detail/recycling_allocator.hpp).
template <class T>
std::shared_ptr<State<T>> make_state() {
  return std::allocate_shared<State<T>>(RecyclingAllocator<State<T>>{});
}

/// Resumes the awaiting coroutine on the loop thread (at once when already there, or with no loop).
struct ResumeOnLoop {
  bool await_ready() const noexcept { return on_loop_thread() || !loop_running(); }
  void await_suspend(std::coroutine_handle<> handle) const noexcept { post(handle); }
  void await_resume() const noexcept {}
};

/// What detail code may do with a Future that users may not (see resume_where_completed).
struct FutureAccess {
  template <class T>
  static std::shared_ptr<State<T>> claim(Future<T>& future) {
    return future.claim();
  }
};

/// Awaits `future` and resumes on the thread that completes it (at once when it is ready), never
/// through the loop: for library code that must go on while the loop is busy or absent (the store
/// server's request path). The coroutine then runs on whatever thread completed the Future, so it
/// must not touch loop-only state.
template <class T>
auto resume_where_completed(Future<T>&& future) {
  struct Awaiter {
    std::shared_ptr<State<T>> state;
    bool await_ready() const noexcept { return state->is_ready(); }
    bool await_suspend(std::coroutine_handle<> handle) noexcept {
      before_wait(state);
      return state->set_continuation(handle, true);
    }
    T await_resume() { return state->take(); }
  };
  return Awaiter{FutureAccess::claim(future)};
}

/// A coroutine nobody awaits. Its body must handle its own errors; any that escapes is logged.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept;
  };
};

}  // namespace detail

/// An eventual value of type T (or an error), like a JavaScript promise: the work it stands for
/// has already started. Consume it once with `co_await`, `then(fn)` or `get()`.
template <class T>
class [[nodiscard]] Future {
 public:
  using value_type = T;
  using promise_type = detail::FuturePromise<T>;

  Future() = default;
  explicit Future(std::shared_ptr<detail::State<T>> state) noexcept : m_state(std::move(state)) {}
  Future(Future&&) noexcept = default;
  Future& operator=(Future&&) noexcept = default;
  Future(const Future&) = delete;
  Future& operator=(const Future&) = delete;

  /// True when this Future refers to an operation (a default-constructed one does not).
  bool valid() const noexcept { return static_cast<bool>(m_state); }

  /// True once the value or error is there; co_await then does not suspend.
  bool ready() const noexcept { return m_state && detail::ready_or_stopped(*m_state); }

  /// Blocks until the value is there and returns it, or rethrows the error. Any thread but the
  /// loop thread (there it throws std::logic_error: co_await instead). On a ThreadPoolManager
  /// thread it runs the queued chunks nested in the chunk it is running while it waits, so a
  /// nested map on the same pool cannot deadlock (docs/managers.md).
  T get() {
    if (detail::on_loop_thread())
      throw std::logic_error("scale::Future::get() called on the loop thread, where it would wait for itself; "
                             "co_await the Future (or use then) inside a scale::Future coroutine instead");
    auto state = claim();
    detail::before_wait(state);
    if (detail::WaitHelper* helper = detail::t_wait_helper)
      helper->wait_for(*state);
    else
      state->wait();
    return state->take();
  }

  /// Runs fn on the loop with the value (or with nothing) and returns a Future of its result;
  /// a Future returned by fn is flattened. Errors skip fn and pass through unchanged.
  template <class F>
  auto then(F fn);

  struct Awaiter {
    std::shared_ptr<detail::State<T>> state;
    bool await_ready() const noexcept { return state->is_ready(); }
    bool await_suspend(std::coroutine_handle<> handle) noexcept {
      detail::before_wait(state);
      return state->set_continuation(handle);
    }
    T await_resume() { return state->take(); }
  };
  Awaiter operator co_await() && { return Awaiter{claim()}; }
  Awaiter operator co_await() & { return Awaiter{claim()}; }

 private:
  friend struct detail::FutureAccess;
  std::shared_ptr<detail::State<T>> claim() {
    if (!m_state) throw std::logic_error("scale::Future is empty (default-constructed or moved from)");
    m_state->consume();
    return std::move(m_state);
  }

  std::shared_ptr<detail::State<T>> m_state;
};

/// The producing side of a Future, for bridging callbacks and threads into Futures.
/// Destroying it without a value fails the Future with scale::BrokenPromise; destroying the
/// Runtime fails it with scale::Stopped.
template <class T = void>
class Promise {
 public:
  Promise() : m_state(detail::make_state<T>()) { detail::prepare_tracking(*m_state); }
  Promise(Promise&&) noexcept = default;
  Promise& operator=(Promise&& other) noexcept {
    if (this != &other) {
      abandon();
      m_state = std::move(other.m_state);
    }
    return *this;
  }
  ~Promise() { abandon(); }

  /// The Future this Promise completes. Call once.
  Future<T> get_future() {
    if (m_future_taken) throw std::logic_error("scale::Promise::get_future() called twice");
    m_future_taken = true;
    return Future<T>(m_state);
  }

  /// Completes with a value; later completions are ignored. Returns whether this one took effect.
  template <class... Args>
  bool set_value(Args&&... args) {
    return m_state && !ready() && m_state->set_value(std::forward<Args>(args)...);
  }
  /// Completes with an error; later completions are ignored.
  bool set_exception(std::exception_ptr error) noexcept { return m_state && !ready() && m_state->fail(std::move(error)); }
  /// True once completed (by this Promise or by Runtime shutdown). A Runtime shutdown after the
  /// Promise was made, which found nobody waiting on it, completes it here with Stopped, so that
  /// a later set_value takes no effect, as if the shutdown had found it.
  bool ready() const noexcept { return m_state && detail::ready_or_stopped(*m_state); }

 private:
  void abandon() noexcept {
    if (m_state && !ready()) m_state->fail(std::make_exception_ptr(BrokenPromise()));
  }
  std::shared_ptr<detail::State<T>> m_state;
  bool m_future_taken = false;
};

/// A Future that already holds `value`.
template <class T>
Future<std::decay_t<T>> make_ready_future(T&& value) {
  auto state = detail::make_state<std::decay_t<T>>();
  state->set_value_alone(std::forward<T>(value));
  return Future<std::decay_t<T>>(std::move(state));
}
/// A Future<void> that is already complete.
inline Future<void> make_ready_future() {
  auto state = detail::make_state<void>();
  state->set_value_alone();
  return Future<void>(std::move(state));
}
/// A Future that already holds `error`.
template <class T = void>
Future<T> make_failed_future(std::exception_ptr error) {
  auto state = detail::make_state<T>();
  state->fail_alone(std::move(error));
  return Future<T>(std::move(state));
}

namespace detail {

template <class T>
class FuturePromiseBase {
 public:
  Future<T> get_return_object() { return Future<T>(m_state); }
  std::suspend_never initial_suspend() noexcept { return {}; }
  /// The coroutine's frame, in a recycled block (detail/recycling_allocator.hpp).
  static void* operator new(std::size_t size) { return recycled_allocate(size); }
  static void operator delete(void* frame, std::size_t size) noexcept { recycled_free(frame, size); }
  // NOTE: completion is published after the coroutine's locals are destroyed (they are gone by the
  // time final_suspend is called), so a continuation never races with this frame's destructors.
  std::suspend_never final_suspend() noexcept {
    // The coroutine is its state's one producer: no claim (State::set_value_alone).
    if (m_error) {
      m_state->fail_alone(std::move(m_error));
    } else if (m_result) {
      try {
        m_state->set_value_alone(std::move(*m_result));
      } catch (...) {  // the state holds the error already
      }
    } else {
      m_state->fail_alone(std::make_exception_ptr(BrokenPromise()));
    }
    return {};
  }
  void unhandled_exception() noexcept { m_error = std::current_exception(); }

 protected:
  std::shared_ptr<State<T>> m_state = make_state<T>();
  std::optional<Stored<T>> m_result;
  std::exception_ptr m_error;
};

template <class T>
class FuturePromise final : public FuturePromiseBase<T> {
 public:
  template <class U>
  requires std::constructible_from<T, U&&>
  void return_value(U&& value) { this->m_result.emplace(std::forward<U>(value)); }
  /// For `co_return {a, b};`.
  void return_value(T&& value) { this->m_result.emplace(std::move(value)); }
};

template <>
class FuturePromise<void> final : public FuturePromiseBase<void> {
 public:
  void return_void() noexcept { this->m_result.emplace(); }
};

/// What `then(fn)` produces: fn's result type with a Future flattened.
template <class T, class F>
struct ThenResult {
  static auto deduce() {
    if constexpr (std::is_void_v<T>) {
      return std::type_identity<std::invoke_result_t<F&>>{};
    } else if constexpr (std::is_invocable_v<F&, T&&>) {
      return std::type_identity<std::invoke_result_t<F&, T&&>>{};
    } else {
      static_assert(std::is_invocable_v<F&>, "scale::Future<T>::then(fn): fn must take the value (T) or nothing");
      return std::type_identity<std::invoke_result_t<F&>>{};
    }
  }
  static constexpr bool deduce_takes_value() {
    if constexpr (std::is_void_v<T>)
      return false;
    else
      return std::is_invocable_v<F&, T&&>;
  }
  using raw = typename decltype(deduce())::type;
  using type = unwrap_t<raw>;
  static constexpr bool takes_value = deduce_takes_value();
};

/// Awaits a Future<T> and gives its value as Stored<T> (an empty value for void).
template <class T>
struct StoredAwaiter {
  typename Future<T>::Awaiter inner;
  bool await_ready() const noexcept { return inner.await_ready(); }
  bool await_suspend(std::coroutine_handle<> handle) noexcept { return inner.await_suspend(handle); }
  Stored<T> await_resume() {
    if constexpr (std::is_void_v<T>) {
      inner.await_resume();
      return {};
    } else {
      return inner.await_resume();
    }
  }
};

/// One coroutine frame per `then`: fn runs in it, and a Future that fn returns is awaited there.
template <class T, class F>
Future<typename ThenResult<T, F>::type> then_impl(Future<T> self, F fn) {
  using R = typename ThenResult<T, F>::raw;
  StoredAwaiter<T> awaiter{std::move(self).operator co_await()};
  Stored<T> value = co_await awaiter;
  co_await ResumeOnLoop{};
  auto call = [&]() -> R {
    if constexpr (ThenResult<T, F>::takes_value)
      return fn(std::move(value));
    else
      return fn();
  };
  if constexpr (!is_future_v<R>) {
    if constexpr (std::is_void_v<R>)
      call();
    else
      co_return call();
  } else if constexpr (std::is_void_v<unwrap_t<R>>) {
    co_await call();
  } else {
    co_return co_await call();
  }
}

/// `then` on a Future that is ready, on the loop thread (or with no loop): what then_impl would do
/// there without suspending, with no coroutine frame: fn runs now; an error skips it and passes
/// through, and one that fn throws fails the result.
template <class T, class F>
Future<typename ThenResult<T, F>::type> then_now(Future<T> self, F fn) {
  using R = typename ThenResult<T, F>::raw;
  using U = typename ThenResult<T, F>::type;
  try {
    auto state = FutureAccess::claim(self);
    auto call = [&]() -> R {
      if constexpr (ThenResult<T, F>::takes_value) {
        return fn(state->take());
      } else {
        state->take();
        return fn();
      }
    };
    if constexpr (is_future_v<R>) {
      return call();
    } else if constexpr (std::is_void_v<R>) {
      call();
      return make_ready_future();
    } else {
      return make_ready_future(call());
    }
  } catch (...) {
    return make_failed_future<U>(std::current_exception());
  }
}

}  // namespace detail

template <class T>
template <class F>
auto Future<T>::then(F fn) {
  if (m_state && m_state->is_ready() && (detail::on_loop_thread() || !detail::loop_running()))
    return detail::then_now<T, F>(std::move(*this), std::move(fn));
  return detail::then_impl<T, F>(std::move(*this), std::move(fn));
}

}  // namespace scale
