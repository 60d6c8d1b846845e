#pragma once
/// \file scale::ProcessPoolManager: runs chunks in child processes of this executable, spawned on demand.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include <scale/detail/job.hpp>
#include <scale/future.hpp>
#include <scale/scalability_manager.hpp>

namespace scale {

namespace detail {
class ProcessPool;
}

/// How a ProcessPoolManager grows, shrinks and retries; meant for designated initialisers:
/// `scale::ProcessPoolManager manager({.max_workers = 4, .idle_timeout = std::chrono::seconds(2)});`
struct ProcessPoolOptions {
  /// The most worker processes at once; 0 means one per hardware thread (at least one).
  std::size_t max_workers = 0;
  /// Workers kept running while idle (started with the manager).
  std::size_t min_workers = 0;
  /// An idle worker above min_workers exits after this long without a task.
  std::chrono::milliseconds idle_timeout{10'000};
  /// How often a chunk runs again after its worker died (RunOptions::max_retries overrides it per call).
  unsigned max_retries = 3;
};

/// Runs chunks in worker processes: children started from /proc/self/exe with this program's
/// arguments plus a worker flag, whose `scale::Runtime(argc, argv)` serves tasks instead of
/// returning. Workers are spawned only when chunks are queued, up to max_workers, reused while
/// busy, and exit after idle_timeout. Items and results travel over a socketpair (raw bytes for
/// trivially copyable types, MessagePack otherwise); the function must capture nothing (see
/// docs/process-pool.md). A worker that dies mid-chunk has the chunk rerun (split in halves, so a
/// chunk that keeps killing workers ends up naming its one bad item in scale::WorkerLost); an
/// exception in the function arrives as scale::RemoteError. Destroying the manager closes every
/// link (the workers exit) and fails chunks still queued or running with scale::Stopped.
class ProcessPoolManager final : public ScalabilityManager {
 public:
  explicit ProcessPoolManager(ProcessPoolOptions options = {});
  ~ProcessPoolManager() override;

  Future<void> submit(detail::Chunk chunk) override;
  std::size_t concurrency() const noexcept override;
  /// 50 ms: a chunk costs a round trip to a process.
  std::chrono::microseconds target_chunk_duration() const noexcept override { return std::chrono::milliseconds(50); }
  ManagerStats stats() const override;

  /// The pids of the worker processes running now (for diagnostics and tests).
  std::vector<pid_t> worker_pids() const;

 private:
  std::shared_ptr<detail::ProcessPool> m_pool;
};

}  // namespace scale
