#pragma once
/// \file scale::InlineManager: runs every chunk on the loop thread, one after another.

#include <chrono>
#include <cstddef>
#include <coroutine>
#include <exception>
#include <memory>
#include <utility>

#include <scale/detail/job.hpp>
#include <scale/detail/loop.hpp>
#include <scale/future.hpp>
#include <scale/scalability_manager.hpp>

namespace scale {

/// Runs chunks on the loop thread, in submission order, each as a separate loop task so that
/// other loop work (timers, events, progress callbacks) runs between chunks. Needs no threads;
/// the tier for debugging and for work that is all waiting.
class InlineManager final : public ScalabilityManager {
 public:
  InlineManager() { m_counters->workers_alive = 1; }

  Future<void> submit(detail::Chunk chunk) override { return run(std::move(chunk), m_counters); }

  std::size_t concurrency() const noexcept override { return 1; }

  /// Short chunks: one chunk blocks the loop while it runs, so they keep the loop responsive and
  /// progress reports regular, at a cost of one loop task per chunk.
  std::chrono::microseconds target_chunk_duration() const noexcept override { return std::chrono::milliseconds(2); }

  ManagerStats stats() const override { return m_counters->snapshot(); }

 private:
  /// Always suspends and resumes through the loop's queue, even on the loop thread.
  struct Requeue {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> handle) const noexcept { detail::post(handle); }
    void await_resume() const noexcept {}
  };

  static Future<void> run(detail::Chunk chunk, std::shared_ptr<detail::TaskCounters> counters) {
    ++counters->queued;
    co_await Requeue{};
    --counters->queued;
    ++counters->running;
    std::exception_ptr error;
    try {
      Future<void> done = detail::run_chunk_on_loop(std::move(chunk));
      co_await std::move(done);
    } catch (...) {
      error = std::current_exception();
    }
    --counters->running;
    if (error) {
      ++counters->failed;
      std::rethrow_exception(error);
    }
    ++counters->done;
  }

  // NOTE: shared with every chunk coroutine in flight, which may outlive the manager.
  std::shared_ptr<detail::TaskCounters> m_counters = std::make_shared<detail::TaskCounters>();
};

}  // namespace scale
