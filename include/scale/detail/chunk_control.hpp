#pragma once
// ChunkControl: what the Scope of a running chunk reaches for stop and progress.
//
// On the thread tiers the algorithm's own Job provides it (its stop flag; the Job sums the progress
// of its running chunks when the dispatch reports); in a worker process the link provides one per
// task (the stop frame sets its flag; a reporter reads the progress at most every 50 ms and sends
// it to the manager when it moved). The per-item loop in iterator.hpp keeps the running item's
// index in the control (item_slot()), which is also what a worker's crash handler reads.
//
// NOTE: Scope::progress is one relaxed store of the fraction here, never a call, a clock read or
// any arithmetic (the item's index is stored once per item by the loop): an item may report many
// times in a microsecond, and whoever owns the control pulls the latest value when it reports (a
// batch, not a message per call).

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
  /// The per-item loop: item `index` (within the chunk) starts, with nothing reported yet.
  void set_item(std::size_t index) noexcept {
    m_item.store(index, std::memory_order_relaxed);
    m_fraction.store(0, std::memory_order_relaxed);
  }
  /// Scope::progress: how far the running item has got (already checked to be in [0, 1]).
  void set_fraction(double fraction) noexcept { m_fraction.store(fraction, std::memory_order_relaxed); }
  /// `items` of the chunk are done, the running item's fraction included (for a control fed from
  /// elsewhere than a Scope: a nested pool's report).
  void set_progress(double items) noexcept {
    const double whole = items < 0 ? 0 : static_cast<double>(static_cast<std::size_t>(items));
    m_item.store(static_cast<std::size_t>(whole), std::memory_order_relaxed);
    m_fraction.store(items < 0 ? 0 : items - whole, std::memory_order_relaxed);
  }
  /// Items of the chunk done, the running item's fraction included (0 before any report); any
  /// thread. The two halves are read apart, so a value read as an item ends may be off by that
  /// item's fraction: the reporters keep what they report from decreasing.
  double latest_progress() const noexcept {
    return static_cast<double>(m_item.load(std::memory_order_relaxed)) + m_fraction.load(std::memory_order_relaxed);
  }
  /// The running item's fraction alone: a reporter sends nothing for a chunk whose function never
  /// reported one (its items still count as its chunk ends).
  double latest_fraction() const noexcept { return m_fraction.load(std::memory_order_relaxed); }
  /// The running item's index within the chunk (what a worker's crash handler reads).
  const std::atomic<std::size_t>* item_slot() const noexcept { return &m_item; }
  /// True the first time a bad Scope::progress value is seen in this call (it is logged once).
  virtual bool first_bad_progress() noexcept = 0;
  /// The chunk starts on this thread; item_slot() holds the index, within the chunk, of the item
  /// running now, until the chunk ends.
  virtual void started() noexcept {}
  /// The chunk ended (returned or threw).
  virtual void ended() noexcept {}

 protected:
  ~ChunkControl() = default;

 private:
  const std::atomic<bool>* m_stop;
  std::atomic<std::size_t> m_item{0};
  std::atomic<double> m_fraction{0};
};

}  // namespace scale::detail
