#pragma once
// What the remote managers (process pool, cluster) share about completing submitted chunks: a
// chunk may be split after a lost worker, so its Promise completes once all of its parts have;
// and Promises are completed after the manager's lock is released, because a completion may run
// its continuation inline (no loop running) and submit again.

#include <cstddef>
#include <exception>
#include <mutex>
#include <utility>
#include <vector>

#include <scale/detail/job.hpp>
#include <scale/future.hpp>

namespace scale::detail {

/// One submitted chunk; guarded by its manager's lock.
struct TaskGroup {
  Promise<void> promise;
  std::size_t remaining = 1;  ///< parts not finished (a split adds one)
  bool finished = false;
};

/// Promises to complete once the manager's lock is released.
class Completions {
 public:
  /// Finishes one part of `group` (under the lock): the group fails with the first error, or
  /// succeeds once every part has; `counters` count the group as done or failed.
  void finish(TaskGroup& group, std::exception_ptr error, TaskCounters& counters) {
    if (group.finished) return;
    if (error) {
      group.finished = true;
      ++counters.failed;
      m_ready.emplace_back(std::move(group.promise), std::move(error));
      return;
    }
    if (--group.remaining == 0) {
      group.finished = true;
      ++counters.done;
      m_ready.emplace_back(std::move(group.promise), nullptr);
    }
  }

  std::vector<std::pair<Promise<void>, std::exception_ptr>> take() { return std::exchange(m_ready, {}); }

 private:
  std::vector<std::pair<Promise<void>, std::exception_ptr>> m_ready;
};

/// A manager's lock that completes the Promises finished under it once it is released.
class CompletingLock {
 public:
  CompletingLock(std::mutex& mutex, Completions& completions) : m_completions(completions), m_lock(mutex) {}
  ~CompletingLock() {
    auto ready = m_completions.take();
    m_lock.unlock();
    for (auto& [promise, error] : ready) {
      if (error)
        promise.set_exception(std::move(error));
      else
        promise.set_value();
    }
  }
  CompletingLock(const CompletingLock&) = delete;
  CompletingLock& operator=(const CompletingLock&) = delete;

 private:
  Completions& m_completions;
  std::unique_lock<std::mutex> m_lock;
};

}  // namespace scale::detail
