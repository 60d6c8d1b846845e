#pragma once
// ChunkControl: what the Scope of a running chunk reaches for stop and progress.
//
// On the thread tiers the algorithm's own Job provides it (its stop flag; the Job sums the progress
// of its running chunks when the dispatch reports); in a worker process the link provides one per
// task (the stop frame sets its flag; a reporter reads the progress at most every 50 ms and sends
// it to the manager when it moved). The per-item loop in iterator.hpp keeps the running item's
// index where started() was told, which is also what a worker's crash handler reads.
//
// NOTE: Scope::progress is one relaxed store here, never a call or a clock read: an item may
// report many times in a microsecond, and whoever owns the control pulls the latest value when it
// reports (a batch, not a message per call).

#include <atomic>
#include <cstddef>

namespace scale::detail {

class ChunkControl {
 public:
  explicit ChunkControl(const std::atomic<bool>* stop) noexcept : m_stop(stop) {}
  ChunkControl(const ChunkControl&) = delete;
  ChunkControl& operator=(const ChunkControl&) = delete;

  /// The chunk's call was asked to stop (RunOptions::stop, Ctrl-C).
  bool stop_requested() const noexcept { return m_stop->load(std::memory_order_relaxed); }
  /// `items` of the chunk are done, the running item's fraction included (0 to the chunk's size).
  void set_progress(double items) noexcept { m_progress.store(items, std::memory_order_relaxed); }
  /// The last set_progress() value (0 before any); any thread.
  double latest_progress() const noexcept { return m_progress.load(std::memory_order_relaxed); }
  /// True the first time a bad Scope::progress value is seen in this call (it is logged once).
  virtual bool first_bad_progress() noexcept = 0;
  /// The chunk starts on this thread; `item` holds the index, within the chunk, of the item
  /// running now, until the chunk ends.
  virtual void started(const std::size_t* item) noexcept { (void)item; }
  /// The chunk ended (returned or threw).
  virtual void ended() noexcept {}

 protected:
  ~ChunkControl() = default;

 private:
  const std::atomic<bool>* m_stop;
  std::atomic<double> m_progress{0};
};

}  // namespace scale::detail
