#pragma once
// Short chunks on a manager whose chunks travel to other processes (the cluster, the process
// pool): while chunks run briefly on their workers (chunk size 1 over cheap items, say), a chunk's
// round trip (through Redis: the manager's XADD, a worker's read, its result, the manager's read;
// through a process's link: the task frame, the result frame) takes far longer than the chunk
// runs. Two chunks in flight per worker thread then leave the workers waiting on the transport,
// and each chunk pays its own round trip. So while chunks are short:
//   - the manager keeps short_chunks_per_thread chunks in flight per worker thread
//     (ShortChunkWindow), not two, for chunks of a call's own chunk size or of a few items;
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

/// A manager's window of chunks in flight, judged by the chunks whose results came back: two per
/// worker thread, short_chunks_per_thread while they are short and of a call's own chunk size or
/// of few items. Any thread.
class ShortChunkWindow {
 public:
  /// A chunk's result came: `took` is its run time, `chosen_chunk_size` its call's
  /// TaskPolicy::chunk_size (0: automatic), `items` its size.
  void finished(std::chrono::microseconds took, std::size_t chosen_chunk_size, std::size_t items) noexcept {
    m_run_time.add(took);
    m_deepens.store(chosen_chunk_size != 0 || items <= short_chunk_items, std::memory_order_relaxed);
  }
  /// Whether the window is deep now.
  bool deep() const noexcept { return m_deepens.load(std::memory_order_relaxed) && m_run_time.short_chunks(); }
  /// Chunks a call keeps submitted while `workers` threads run them (chunks_in_flight).
  std::size_t chunks_in_flight(std::size_t workers) const noexcept {
    return (deep() ? short_chunks_per_thread : 2) * workers;
  }

 private:
  SmoothedRunTime m_run_time;
  std::atomic<bool> m_deepens{true};  // of the last chunk whose result came
};

}  // namespace scale::detail
