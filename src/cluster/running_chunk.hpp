#pragma once
// A chunk running on a cluster worker, as its Scope and the worker see it: the stop flag a stop
// order sets (Scope::stop_requested(); the per-item loop stops between items), the token a
// --scale-processes worker hands to its own process pool (which tells the child, and kills it
// after the grace), and the progress the chunk reported (Scope::progress stores it; the worker
// reads it every 50 ms while it holds chunks and sends one entry per chunk whose progress moved;
// src/cluster/keys.hpp, kind "g").

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>

#include <scale/detail/chunk_control.hpp>
#include <scale/detail/job.hpp>

namespace scale::detail {

class RunningChunk final : public ChunkControl {
 public:
  /// `grace`: the call's RunOptions::grace (the task entry's "g").
  explicit RunningChunk(std::chrono::milliseconds grace) : ChunkControl(&m_stop), m_grace(grace) {}
  ~RunningChunk() = default;

  /// The manager stopped the chunk's call (any thread; idempotent).
  void request_stop() noexcept {
    m_stop.store(true, std::memory_order_relaxed);
    m_source.request_stop();
  }
  bool stopped() const noexcept { return m_stop.load(std::memory_order_relaxed); }
  /// It began to run (a chunk read ahead waits for a thread first). Any thread.
  void mark_started() noexcept { m_started.store(true, std::memory_order_relaxed); }
  bool has_started() const noexcept { return m_started.load(std::memory_order_relaxed); }
  std::stop_token stop_token() const noexcept { return m_source.get_token(); }
  std::chrono::milliseconds grace() const noexcept { return m_grace; }

  /// Logged once per chunk here (the worker does not know the rest of the call).
  bool first_bad_progress() noexcept override { return !m_bad_progress_seen.exchange(true); }

  /// The progress (Job::progress_units) reported since the last call, or nothing (the worker's
  /// I/O thread, under the worker's lock of its held chunks).
  std::optional<std::int64_t> take_progress() noexcept {
    if (latest_fraction() != 0) m_reporting = true;
    if (!m_reporting) return std::nullopt;  // its function reports nothing: its result says it all
    const std::int64_t units = Job::progress_units(latest_progress());
    if (units == m_taken) return std::nullopt;
    m_taken = units;
    return units;
  }

 private:
  std::atomic<bool> m_stop{false};
  std::atomic<bool> m_started{false};
  std::stop_source m_source;
  const std::chrono::milliseconds m_grace;
  std::int64_t m_taken = 0;   // what take_progress() last returned
  bool m_reporting = false;  // a fraction was seen
  std::atomic<bool> m_bad_progress_seen{false};
};

}  // namespace scale::detail
