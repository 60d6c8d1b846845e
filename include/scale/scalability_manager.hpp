#pragma once
/// \file scale::ScalabilityManager: the one interface every place that runs work implements.

#include <algorithm>
#include <cstddef>

#include <scale/detail/job.hpp>
#include <scale/future.hpp>

namespace scale {

/// Runs chunks of an algorithm's items: on the loop (InlineManager), on threads
/// (ThreadPoolManager), in child processes or on other servers. The Iterator algorithms are
/// written once over this interface.
class ScalabilityManager {
 public:
  ScalabilityManager() = default;
  ScalabilityManager(const ScalabilityManager&) = delete;
  ScalabilityManager& operator=(const ScalabilityManager&) = delete;
  virtual ~ScalabilityManager() = default;

  /// Runs items [chunk.begin, chunk.end) of chunk.job; callable from any thread. The Future
  /// completes (resuming its awaiter on the loop) once every item of the chunk has run and its
  /// result is written into the job, or fails with the exception an item threw (type preserved
  /// on the thread tiers). A chunk of an already-cancelled job fails with detail::ChunkSkipped
  /// without running. Implementations run chunks through detail::run_chunk_blocking or
  /// detail::run_chunk_on_loop, so the cancel rules are the same everywhere.
  virtual Future<void> submit(detail::Chunk chunk) = 0;

  /// How many chunks this manager runs at once (threads, worker processes). The algorithms keep
  /// about twice this many chunks submitted, so each worker has the next one queued.
  virtual std::size_t concurrency() const noexcept = 0;

  /// Items per chunk when RunOptions::chunk_size is 0. By default about four chunks per worker
  /// (so uneven items still balance), never fewer than one item; managers whose per-chunk cost
  /// is high (a process round trip) override it to keep chunks large enough to amortize that.
  virtual std::size_t auto_chunk_size(std::size_t items) const noexcept {
    const std::size_t chunks = std::max<std::size_t>(1, concurrency()) * 4;
    return std::max<std::size_t>(1, (items + chunks - 1) / chunks);
  }

  /// Workers and tasks (chunks) as of now.
  virtual ManagerStats stats() const = 0;
};

}  // namespace scale
