#pragma once
// The shared state behind a Future: a result slot, one consumer, and a way to wake it.
//
// Why it looks like this:
//   - The hand-off from the producer to the one consumer is one atomic word (`m_word`, below):
//     the consumer publishes how it waits (a coroutine to resume, a blocked thread, a waker) with
//     one compare-and-swap, the producer completes with one exchange and acts on what it finds.
//     No mutex and no condition variable: get() sleeps in std::atomic::wait (a futex).
//   - Completion is claimed first (`m_claimed`), so that two producers racing (a Promise and the
//     Runtime's shutdown failing it with Stopped) never both write the result. A state with one
//     producer that nothing else completes (a coroutine's, a ready Future's) skips the claim
//     (set_value_alone, fail_alone): one read-modify-write less per step of a `then` chain.
//   - Only a Promise's state joins the shutdown registry, and only when its consumer waits on it
//     while it is pending (before_wait, detail::track_waited): a Promise completed before anyone
//     waits, the common hand-off, takes no lock. Each Promise's state notes the registry's
//     generation when it is made; one made before a Runtime shutdown and never tracked is failed
//     with Stopped when it is next waited on, completed or polled, as if the shutdown had found it.
//     `tracked` is read without the registry's lock, so completing any other state takes no lock.

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
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
  /// Called on the completing thread once the state is ready (is_ready() is true), before
  /// clear_waker can return; must return at once and must not touch the state.
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

/// A state's place in the shutdown registry (src/core/runtime.cpp): an intrusive list link, and
/// the reference that keeps a pending Promise's state alive until it completes or is stopped.
struct RegistryLink {
  StateBase* previous = nullptr;
  StateBase* next = nullptr;
  std::shared_ptr<StateBase> self;
  std::atomic<bool> tracked{false};
  /// A Promise's state: tracked once its consumer waits on it while pending. Set when it is made.
  bool when_waited = false;
  /// The registry's generation when it was made (a Runtime shutdown starts the next one).
  std::uint64_t generation = 0;
};

class StateBase {
 public:
  StateBase() = default;
  StateBase(const StateBase&) = delete;
  StateBase& operator=(const StateBase&) = delete;
  virtual ~StateBase();

  /// True once the value or error is there to take.
  bool is_ready() const noexcept {
    const std::uint32_t word = m_word.load(std::memory_order_acquire);
    return word == kDone || word == kWaking;
  }

  /// is_ready() as a sequentially consistent load (the shutdown registry's, after it tracks).
  bool is_ready_seq_cst() const noexcept {
    const std::uint32_t word = m_word.load(std::memory_order_seq_cst);
    return word == kDone || word == kWaking;
  }

  /// Completes with an error. Returns false when already complete (the error is dropped).
  bool fail(std::exception_ptr error) noexcept {
    if (!claim()) return false;
    m_error = std::move(error);
    finish();
    return true;
  }

  /// Completes with an error, for a state nothing else can complete (no claim).
  void fail_alone(std::exception_ptr error) noexcept {
    m_claimed.store(true, std::memory_order_relaxed);
    m_error = std::move(error);
    finish();
  }

  /// Claims the single consumer slot; a second consumer is a programming error.
  /// NOTE: a load and a store, not an exchange: the one consumer is on one thread at a time, so
  /// a second consume after the first (the mistake this catches) always sees the flag.
  void consume() {
    if (m_consumed.load(std::memory_order_relaxed)) throw_consumed_twice();
    m_consumed.store(true, std::memory_order_relaxed);
  }
  [[noreturn]] static void throw_consumed_twice() {
    throw std::logic_error("scale::Future consumed twice: a Future delivers its value once (co_await, then or get); "
                           "keep the value, or use when_all to wait for several");
  }

  /// Sets the coroutine to resume on completion: through the loop, or (`where_completed`) on the
  /// thread that completes the state. Returns false when already complete (resume now).
  bool set_continuation(std::coroutine_handle<> handle, bool where_completed = false) noexcept {
    m_continuation = handle;
    m_resume_where_completed = where_completed;
    return publish(kContinuation);
  }

  /// Registers `waker` to be told when the state completes. Returns false (and registers nothing)
  /// when already complete. One waker at a time: the single consumer's.
  bool set_waker(StateWaker* waker) noexcept {
    m_waker = waker;
    return publish(kWaker);
  }
  /// Unregisters the waker. Once this returns no call to it is running or will start, so the
  /// waker may be destroyed.
  void clear_waker() noexcept {
    std::uint32_t word = kWaker;
    if (m_word.compare_exchange_strong(word, kEmpty, std::memory_order_acq_rel)) return;
    while (word == kWaking) {  // the completing thread is calling it: wait until it has returned
      m_word.wait(kWaking, std::memory_order_acquire);
      word = m_word.load(std::memory_order_acquire);
    }
  }

  /// Blocks the calling thread until complete.
  void wait() noexcept {
    if (!publish(kBlocked)) return;
    std::uint32_t word = kBlocked;
    while (word != kDone) {
      m_word.wait(word, std::memory_order_acquire);
      word = m_word.load(std::memory_order_acquire);
    }
  }

  /// The shutdown registry's bookkeeping (detail::track_waited), touched only under its lock but
  /// for `tracked`, which completion reads to skip the registry for a state never tracked, and
  /// for the two fields set when the state is made.
  RegistryLink m_registry;

 protected:
  // The consumer's side of m_word: kEmpty, then one of kContinuation / kBlocked / kWaker (set by
  // the consumer, with the field it names written first); the producer's side: kDone, or kWaking
  // while it calls the waker (then kDone).
  static constexpr std::uint32_t kEmpty = 0;
  static constexpr std::uint32_t kContinuation = 1;
  static constexpr std::uint32_t kBlocked = 2;
  static constexpr std::uint32_t kWaker = 3;
  static constexpr std::uint32_t kWaking = 4;
  static constexpr std::uint32_t kDone = 5;

  /// The producer's right to write the result; false when another producer already has it.
  bool claim() noexcept { return !m_claimed.exchange(true, std::memory_order_acq_rel); }

  /// The consumer publishes how it waits; false when the state completed first.
  bool publish(std::uint32_t how) noexcept {
    std::uint32_t word = kEmpty;
    return m_word.compare_exchange_strong(word, how, std::memory_order_acq_rel, std::memory_order_acquire);
  }

  // NOTE: the result is written before finish(), which publishes it with a release exchange of
  // m_word; every reader (is_ready, the consumer's failed publish) reads m_word with acquire.
  // The exchange and the load of `tracked` after it are sequentially consistent, as are the
  // registry's store of `tracked` and its load of m_word after it (track_waited): of a consumer
  // tracking the state and a producer completing it at once, one sees the other, so a completed
  // state never stays in the registry.
  // The waker is called in kWaking, which clear_waker waits out: the waker lives on the waiting
  // thread's stack. Whoever completes holds a reference to the state, so the notify after the
  // exchange never touches freed memory.
  void finish() noexcept {
    // The consumer moves m_word away from kEmpty at most once, so this loops at most twice.
    std::uint32_t word = m_word.load(std::memory_order_acquire);
    while (!m_word.compare_exchange_weak(word, word == kWaker ? kWaking : kDone, std::memory_order_seq_cst,
                                         std::memory_order_acquire)) {
    }
    if (word == kWaker) {
      m_waker->state_completed();
      m_word.store(kDone, std::memory_order_release);
      m_word.notify_all();
    } else if (word == kBlocked) {
      m_word.notify_all();
    }
    if (m_registry.tracked.load(std::memory_order_seq_cst)) untrack(this);
    if (word != kContinuation) return;
    if (m_resume_where_completed)
      m_continuation.resume();
    else
      post(m_continuation);
  }

  std::atomic<std::uint32_t> m_word{kEmpty};
  std::atomic<bool> m_claimed{false};
  std::atomic<bool> m_consumed{false};
  bool m_resume_where_completed = false;
  std::exception_ptr m_error;
  std::coroutine_handle<> m_continuation;
  StateWaker* m_waker = nullptr;
};

template <class T>
class State final : public StateBase {
 public:
  /// Completes with a value. Returns false when already complete (the value is dropped).
  template <class... Args>
  bool set_value(Args&&... args) {
    if (!claim()) return false;
    complete_with(std::forward<Args>(args)...);
    return true;
  }

  /// Completes with a value, for a state nothing else can complete (no claim). A value whose
  /// construction throws completes it with that error, which is then rethrown.
  template <class... Args>
  void set_value_alone(Args&&... args) {
    m_claimed.store(true, std::memory_order_relaxed);
    complete_with(std::forward<Args>(args)...);
  }

  /// Moves the result out (or rethrows the error). Only after completion, by the one consumer.
  T take() {
    if (m_error) std::rethrow_exception(m_error);
    if constexpr (!std::is_void_v<T>) return std::move(*m_value);
  }

 private:
  /// Once claimed: writes the value and completes; a throwing construction completes with its
  /// error, which is then rethrown.
  template <class... Args>
  void complete_with(Args&&... args) {
    try {
      m_value.emplace(std::forward<Args>(args)...);
    } catch (...) {
      m_error = std::current_exception();
      finish();
      throw;
    }
    finish();
  }

  std::optional<Stored<T>> m_value;
};

/// Before the consumer waits on `state` (suspends, blocks or registers a waker): a Promise's
/// state joins the shutdown registry. Any other state, and a Promise's once complete, never does.
template <class S>
void before_wait(const std::shared_ptr<S>& state) noexcept {
  if (state->m_registry.when_waited && !state->is_ready()) track_waited(state);
}

}  // namespace scale::detail
