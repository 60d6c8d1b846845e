#pragma once
// A chunk running on a cluster worker, as its Scope and the worker see it: the stop flag a stop
// order sets (Scope::stop_requested(); the per-item loop stops between items), the token a
// --scale-processes worker hands to its own process pool (which tells the child, and kills it
// after the grace), and the progress the chunk reported, which the worker sends to the manager in
// batches (at most one entry per running chunk every 50 ms; src/cluster/keys.hpp, kind "g").

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>

#include <scale/detail/chunk_control.hpp>
#include <scale/detail/job.hpp>

namespace scale::detail {

class RunningChunk final : public ChunkControl {
 public:
  /// `grace`: the call's RunOptions::grace (the task entry's "g"); `on_progress_pending`: called,
  /// on the chunk's thread, when the chunk reports progress and none was waiting to be sent.
  RunningChunk(std::chrono::milliseconds grace, std::function<void()> on_progress_pending)
      : ChunkControl(&m_stop), m_grace(grace), m_on_progress_pending(std::move(on_progress_pending)) {}
  ~RunningChunk() = default;

  /// The manager stopped the chunk's call (any thread; idempotent).
  void request_stop() noexcept {
    m_stop.store(true, std::memory_order_relaxed);
    m_source.request_stop();
  }
  bool stopped() const noexcept { return m_stop.load(std::memory_order_relaxed); }
  std::stop_token stop_token() const noexcept { return m_source.get_token(); }
  std::chrono::milliseconds grace() const noexcept { return m_grace; }

  void progress(double items) noexcept override {
    m_units.store(Job::progress_units(items), std::memory_order_relaxed);
    if (!m_dirty.exchange(true, std::memory_order_acq_rel) && m_on_progress_pending) m_on_progress_pending();
  }
  /// Logged once per chunk here (the worker does not know the rest of the call).
  bool first_bad_progress() noexcept override { return !m_bad_progress_seen.exchange(true); }

  /// The progress (Job::progress_units) reported since the last call, or nothing.
  std::optional<std::int64_t> take_progress() noexcept {
    if (!m_dirty.exchange(false, std::memory_order_acq_rel)) return std::nullopt;
    return m_units.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<bool> m_stop{false};
  std::stop_source m_source;
  const std::chrono::milliseconds m_grace;
  std::function<void()> m_on_progress_pending;
  std::atomic<std::int64_t> m_units{0};
  std::atomic<bool> m_dirty{false};
  std::atomic<bool> m_bad_progress_seen{false};
};

}  // namespace scale::detail
