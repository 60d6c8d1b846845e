#pragma once
// Short chunks on a manager whose chunks travel to other processes (the cluster, the process
// pool): while chunks run briefly on their workers (chunk size 1 over cheap items, say), a chunk's
// round trip (through Redis: the manager's XADD, a worker's read, its result, the manager's read;
// through a process's link: the task frame, the result frame) takes far longer than the chunk
// runs. Two chunks in flight per worker thread then leave the workers waiting on the transport,
// and each chunk pays its own round trip. So while chunks are short:
//   - the manager keeps short_chunks_per_thread chunks in flight per worker thread
//     (chunks_in_flight), not two, for chunks of a call's own chunk size or of a few items
//     (may_deepen_window);
//   - on the cluster, a worker that runs chunks on threads of its own (not --scale-processes, and
//     providing no amounts) reads up to that many per thread: one running, the rest read ahead,
//     so one read brings several and their results travel together (src/cluster/worker.cpp);
//   - on the process pool, a child holds up to that many (one running, the rest queued behind
//     it in its link), so one write carries several task frames to it and one read brings several
//     of its results back (src/process/process_pool.cpp).
// Each side judges by the run times it sees (a cluster worker its own; a manager those of the
// results that come back), smoothed so that one long chunk ends it at once: long chunks are then
// never held on a busy worker while another is idle, and never wait behind one another there.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace scale::detail {

/// A chunk whose smoothed run time is under this is short.
inline constexpr std::chrono::microseconds short_chunk_time{1000};

/// A chunk of an automatically sized call deepens the manager's window only when it has at most
/// this many items: such a call starts with probes of up to 64 items, sized from the call, and
/// then cuts long chunks; a deeper window would only cut more probes.
inline constexpr std::size_t short_chunk_items = 8;

/// Whether a finished chunk lets a manager keep its window deep while chunks are short: its call
/// chose its chunk size (TaskPolicy::chunk_size, any count), or it has few items.
inline bool may_deepen_window(std::size_t chosen_chunk_size, std::size_t items) noexcept {
  return chosen_chunk_size != 0 || items <= short_chunk_items;
}

/// While chunks are short: chunks in flight per worker thread (the manager), and chunks a worker
/// holds per thread, read ahead included.
inline constexpr std::size_t short_chunks_per_thread = 32;

/// The run time of recent chunks: a longer one counts at once, a shorter one by an eighth. Any
/// thread (a lost update among threads that add at once only delays the average by a chunk).
class SmoothedRunTime {
 public:
  void add(std::chrono::microseconds took) noexcept {
    const std::int64_t us = std::max<std::int64_t>(0, took.count());
    const std::int64_t old = m_us.load(std::memory_order_relaxed);
    m_us.store(old < 0 || us > old ? us : old + (us - old) / 8, std::memory_order_relaxed);
  }
  /// Whether chunks are short now (false before any chunk ran).
  bool short_chunks() const noexcept {
    const std::int64_t us = m_us.load(std::memory_order_relaxed);
    return us >= 0 && us < short_chunk_time.count();
  }

 private:
  std::atomic<std::int64_t> m_us{-1};  // -1: no chunk yet
};

}  // namespace scale::detail
