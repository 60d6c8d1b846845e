#pragma once
/// \file scale::ThreadPoolManager: runs chunks on a fixed set of threads in this process.

#include <cstddef>
#include <memory>
#include <thread>

#include <scale/detail/job.hpp>
#include <scale/future.hpp>
#include <scale/scalability_manager.hpp>

namespace scale {

namespace detail {
class ThreadPool;
}

/// Runs chunks on `threads` pool threads fed from one queue of chunks (one lock per chunk, none
/// per item). Items reach the function by reference to the Iterator's shared items and results
/// are written in place: nothing is copied or serialized. Destroying the manager joins its
/// threads after their current chunks; chunks still queued fail with scale::Stopped.
class ThreadPoolManager final : public ScalabilityManager {
 public:
  /// `threads` 0 means one per hardware thread (at least one).
  explicit ThreadPoolManager(std::size_t threads = std::thread::hardware_concurrency());
  ~ThreadPoolManager() override;

  Future<void> submit(detail::Chunk chunk) override;
  std::size_t concurrency() const noexcept override;
  ManagerStats stats() const override;

 private:
  std::unique_ptr<detail::ThreadPool> m_pool;
};

}  // namespace scale
