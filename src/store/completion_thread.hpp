#pragma once
// Where a journaled write's waiter completes: the store server's I/O thread that made the write,
// rather than the log's writer thread. Each I/O thread names itself (set_current) while it runs;
// StoreLog::append notes the thread it is called on, and its writer hands each thread the waiters
// of a batch in one post, so a group commit wakes each I/O thread once and the answers are built
// there, in parallel, instead of one after the other on the writer.

#include <functional>

namespace scale::detail {

/// A thread that runs work posted to it (a store server's I/O thread).
class CompletionThread {
 public:
  virtual ~CompletionThread() = default;
  /// Any thread: runs `work` on this thread, later, never inside this call.
  virtual void post(std::function<void()> work) = 0;

  /// The completion thread the calling thread is (null for any other thread).
  static CompletionThread* current() noexcept;
  /// Called by a thread on itself as it starts (and with null as it stops) serving.
  static void set_current(CompletionThread* thread) noexcept;
};

}  // namespace scale::detail
