#pragma once
// The control of a cluster chunk inside a --scale-processes worker's child. The child runs the
// chunk's whole task payload as one item of its worker's own process pool, so the chunk's Scope
// reaches the pool's control of that item: its stop flag (set by the pool's stop frame) is
// relayed to the chunk's own flag, and the chunk's progress (items of the chunk) goes to the
// item as a fraction of the chunk, both every 10 ms by one relay thread per child.

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <scale/detail/chunk_control.hpp>
#include <scale/scope.hpp>

namespace scale::detail {

class ChildChunkControl final : public ChunkControl {
 public:
  /// `item`: the Scope of the pool's item running the chunk; `items`: the chunk's size.
  ChildChunkControl(const Scope& item, std::size_t items);
  ~ChildChunkControl();
  ChildChunkControl(const ChildChunkControl&) = delete;
  ChildChunkControl& operator=(const ChildChunkControl&) = delete;

  bool first_bad_progress() noexcept override { return !m_bad_progress_seen.exchange(true); }
  /// The child's crash handler names the item within the cluster chunk, under the pool's task.
  void started() noexcept override;
  void ended() noexcept override;

 private:
  friend class StopRelay;
  /// Copies the item's stop request to the chunk's flag and the chunk's progress to the item (the
  /// relay's thread).
  void relay() noexcept;

  const Scope& m_item;
  const double m_items;
  const std::uint64_t m_task_id;  // the pool's task running the chunk
  std::atomic<bool> m_stop{false};
  std::atomic<bool> m_bad_progress_seen{false};
  bool m_reporting = false;  // the relay's thread: a fraction was seen
};

}  // namespace scale::detail
