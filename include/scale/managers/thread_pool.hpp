#pragma once
/// \file scale::ThreadPoolManager: runs chunks on a set of threads in this process, resized by
/// hand (resize) or following the backlog (adapt).

#include <cstddef>
#include <memory>
#include <string>
#include <vector>
#include <thread>

#include <scale/detail/job.hpp>
#include <scale/future.hpp>
#include <scale/provides.hpp>
#include <scale/scalability_manager.hpp>
#include <scale/scaling_policy.hpp>

namespace scale {

namespace detail {
class ThreadPool;
}

/// What a ThreadPoolManager offers besides its threads, meant for designated initialisers:
/// `scale::ThreadPoolManager pool(4, {.provides = {{"gpu", "2"}, {"site", "lab"}}});`
struct ThreadPoolOptions {
  /// Amounts and labels the pool offers as a whole (Provides: a number is an amount, anything else
  /// a label). gpu=2 means the machine's two GPUs: at most two chunks of calls with
  /// RunOptions::resources gpu=1 run at once, whatever the thread count. Empty: none, so a call
  /// that needs any fails with scale::Unsatisfiable. Checked as parse_provides checks its text
  /// (std::invalid_argument).
  Provides provides{};
};

/// Runs chunks on pool threads fed from one queue of chunks (one lock per chunk, none per item).
/// Items reach the function by reference to the Iterator's shared items and results are written
/// in place: nothing is copied or serialized. A function may itself run a map (or filter, reduce,
/// for_each) on this or another manager and `get()` it: the waiting thread runs the chunks nested
/// in its own meanwhile, so nesting never deadlocks. Destroying the manager joins its threads
/// after their current chunks; chunks still queued fail with scale::Stopped.
///
/// Routing: a chunk of a call with RunOptions::resources holds them while it runs; the pool never
/// runs chunks that together hold more than options.provides offers, and such a chunk waits in a
/// queue of its own class, so a chunk that needs nothing (or what is still free) never waits
/// behind it. A call the pool can never meet (an amount above the offer, a label it lacks) fails
/// at once with scale::Unsatisfiable, before any of its chunks runs. A map nested in a chunk
/// that holds amounts may use what that chunk holds (docs/routing.md).
class ThreadPoolManager final : public ScalabilityManager {
 public:
  /// `threads` 0 means one per hardware thread (at least one). This is the initial fixed count.
  explicit ThreadPoolManager(std::size_t threads = std::thread::hardware_concurrency(), ThreadPoolOptions options = {});
  ~ThreadPoolManager() override;

  /// Sets a fixed thread count and turns adapt off. Growth is immediate; to shrink, idle threads
  /// retire (a busy one finishes its chunk first) and are joined. With 0, chunks already queued
  /// still run (the last thread stays until the queue is empty) and calls that submit more fail
  /// with scale::NoWorkers.
  void resize(std::size_t threads);

  /// Follows the running calls' backlog under `policy` (policy.max 0: one per hardware thread)
  /// and turns a fixed count off. Throws std::invalid_argument for a policy that
  /// ScalingPolicy::validate() refuses, leaving the pool as it was.
  void adapt(ScalingPolicy policy);

  Future<void> submit(detail::Chunk chunk) override;
  /// Fails the call's chunks that wait for amounts at once (the rest are skipped as threads reach them).
  void stop_call(const std::shared_ptr<detail::Job>& job) override;
  /// The thread count the pool is at or moving to (ManagerStats::workers_target).
  std::size_t concurrency() const noexcept override;
  ManagerStats stats() const override;
  void backlog_changed() override;
  /// The live threads' ids ("thread-<k>"), except those whose setup threw.
  Future<std::vector<std::string>> broadcast_targets() override;
  void add_setup(std::shared_ptr<detail::Job> setup) override;

  std::string_view report_kind() const noexcept override { return "thread_pool"; }
  /// The live threads ("thread-<k>"), one chunk at a time each.
  std::vector<detail::ReportedWorker> report_workers() const override;

 private:
  std::unique_ptr<detail::ThreadPool> m_pool;
};

}  // namespace scale
