#pragma once
// Cutting a call into chunks and feeding them to a manager: the one dispatch loop every
// Iterator algorithm shares.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <scale/detail/job.hpp>
#include <scale/future.hpp>
#include <scale/run_options.hpp>
#include <scale/scalability_manager.hpp>
#include <scale/when_all.hpp>

namespace scale::detail {

/// How a call of `total` items is cut: chunks of `chunk_size` items, the last one shorter.
struct ChunkPlan {
  std::size_t total = 0;
  std::size_t chunk_size = 1;
  std::size_t chunks = 0;
  std::size_t begin_of(std::size_t chunk) const noexcept { return chunk * chunk_size; }
  std::size_t end_of(std::size_t chunk) const noexcept { return std::min(total, begin_of(chunk) + chunk_size); }
};

inline ChunkPlan plan_chunks(const ScalabilityManager& manager, std::size_t total, std::size_t chunk_size) {
  ChunkPlan plan;
  plan.total = total;
  plan.chunk_size = chunk_size != 0 ? chunk_size : manager.auto_chunk_size(total);
  plan.chunk_size = std::clamp<std::size_t>(plan.chunk_size, 1, std::max<std::size_t>(total, 1));
  plan.chunks = (total + plan.chunk_size - 1) / plan.chunk_size;
  return plan;
}

struct Dispatch {
  std::shared_ptr<Job> job;
  ScalabilityManager* manager;
  ChunkPlan plan;
  std::function<void(std::size_t, std::size_t)> progress;
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> done{0};
  std::mutex mutex;
  std::exception_ptr error;

  /// Keeps the first real error and stops further chunks from starting.
  void fail(std::exception_ptr failure) noexcept {
    job->cancel();
    try {
      std::rethrow_exception(failure);
    } catch (const ChunkSkipped&) {
      return;  // a consequence of another chunk's error, which that chunk's lane records
    } catch (...) {
    }
    std::lock_guard lock(mutex);
    if (!error) error = std::move(failure);
  }
};

/// Submits chunks one at a time, the next after the previous completes, until none are left or
/// the call failed. Never throws: errors go to Dispatch::fail.
inline Future<void> dispatch_lane(std::shared_ptr<Dispatch> dispatch) {
  for (;;) {
    if (dispatch->job->cancelled()) co_return;
    const std::size_t chunk = dispatch->next.fetch_add(1, std::memory_order_relaxed);
    if (chunk >= dispatch->plan.chunks) co_return;
    const std::size_t begin = dispatch->plan.begin_of(chunk);
    const std::size_t end = dispatch->plan.end_of(chunk);
    std::exception_ptr error;
    try {
      // NOTE: GCC 12 may destroy a temporary inside a co_await expression twice; every
      // co_await in the library awaits a named Future.
      Future<void> chunk_done = dispatch->manager->submit(Chunk{dispatch->job, begin, end});
      co_await std::move(chunk_done);
      const std::size_t done = dispatch->done.fetch_add(end - begin, std::memory_order_relaxed) + (end - begin);
      if (dispatch->progress) dispatch->progress(done, dispatch->plan.total);
    } catch (...) {
      error = std::current_exception();
    }
    if (error) {
      dispatch->fail(std::move(error));
      co_return;
    }
  }
}

/// Runs every chunk of `job` on `manager` and completes on the loop once all have finished, or
/// fails with the first error once the chunks already running have finished (no chunk of the
/// job is still running when the Future completes, unless the Runtime is shutting down).
inline Future<void> dispatch_all(std::shared_ptr<Job> job, ScalabilityManager* manager, ChunkPlan plan,
                                 std::function<void(std::size_t, std::size_t)> progress) {
  co_await ResumeOnLoop{};
  auto dispatch = std::make_shared<Dispatch>();
  dispatch->job = std::move(job);
  dispatch->manager = manager;
  dispatch->plan = plan;
  dispatch->progress = std::move(progress);
  // Two chunks in flight per worker: each worker has its next chunk queued while it runs one.
  const std::size_t lanes = std::min(plan.chunks, std::max<std::size_t>(1, manager->concurrency()) * 2);
  std::vector<Future<void>> running;
  running.reserve(lanes);
  for (std::size_t i = 0; i < lanes; ++i) running.push_back(dispatch_lane(dispatch));
  Future<void> all_done = when_all(std::move(running));
  co_await std::move(all_done);
  if (dispatch->error) std::rethrow_exception(dispatch->error);
}

}  // namespace scale::detail
