#pragma once
// What the remote managers (process pool, cluster) share about completing submitted chunks: a
// chunk may be split after a lost worker, so its Promise completes once all of its parts have;
// and Promises are completed after the manager's lock is released, because a completion may run
// its continuation inline (no loop running) and submit again. A worker's answer goes back to its
// call through remote/task_result.hpp.

#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <scale/detail/job.hpp>
#include "remote/task_payload.hpp"
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

/// The start of a remote manager's submit. A chunk that cannot leave this process (the Job's
/// remote_problem() or a Job with no registered task: scale::NotShippable; the manager's own
/// `problem`: scale::Error) cancels its call and gets its failed Future here; otherwise the new
/// Task (with `group` and `chunk` members) for it, and `future` is its group's.
template <class Task>
std::shared_ptr<Task> start_remote_task(Chunk chunk, std::string problem, TaskCounters& counters,
                                        Future<void>& future) {
  std::string why = chunk.job->remote_problem();
  if (why.empty() && chunk.job->task_name().empty())
    why = "scale: this job has no registered task and cannot run in another process";
  std::exception_ptr error;
  if (!why.empty())
    error = std::make_exception_ptr(NotShippable(why));
  else if (!problem.empty())
    error = std::make_exception_ptr(Error(problem));
  if (error) {
    chunk.job->cancel();
    ++counters.failed;
    future = make_failed_future<void>(std::move(error));
    return nullptr;
  }
  auto task = std::make_shared<Task>();
  task->group = std::make_shared<TaskGroup>();
  task->chunk = std::move(chunk);
  future = task->group->promise.get_future();
  return task;
}

/// A task whose worker was lost while it ran (or that ran past its timeout): what runs again, in
/// order (the task, and after a split its second half as a new Task in the same group), or
/// nothing when the task is finished instead through `finish(task, error)` (its call was
/// cancelled, or it gave up with WorkerLost, carrying `capsule`; see on_lost_chunk).
template <class Task, class Finish>
std::vector<std::shared_ptr<Task>> rerun_lost_task(std::shared_ptr<Task> task, const std::string& status,
                                                   unsigned default_max_retries, TaskCounters& counters,
                                                   Finish&& finish, const CrashReport* capsule = nullptr) {
  Job& job = *task->chunk.job;
  if (task->group->finished || job.cancelled()) {
    finish(*task, std::make_exception_ptr(ChunkSkipped()));
    return {};
  }
  const unsigned max_retries = job.policy().max_retries.value_or(default_max_retries);
  LostChunk outcome = on_lost_chunk(task->chunk, task->attempts, max_retries, status, capsule);
  if (outcome.kind == LostChunk::Kind::give_up) {
    job.cancel();
    finish(*task, outcome.error);
    return {};
  }
  ++counters.retried;
  std::vector<std::shared_ptr<Task>> again{task};
  if (outcome.kind == LostChunk::Kind::split) {
    auto second = std::make_shared<Task>();
    second->group = task->group;
    // The second half keeps the chunk's key and pinned worker: it goes where the first goes.
    second->chunk = Chunk{task->chunk.job, outcome.middle, task->chunk.end, task->chunk.key, task->chunk.worker};
    task->chunk.end = outcome.middle;
    ++task->group->remaining;
    again.push_back(std::move(second));
  }
  return again;
}

}  // namespace scale::detail
