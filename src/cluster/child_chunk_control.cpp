// A cluster chunk's control in a --scale-processes worker's child (cluster/child_chunk_control.hpp).

#include "cluster/child_chunk_control.hpp"

#include "process/crash_context.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace scale::detail {

/// One thread per child that, while chunks run, relays their items' stop requests and their own
/// progress every 10 ms (the item is reached through its Scope only, so both are polled; a chunk
/// runs far longer).
class StopRelay {
 public:
  static StopRelay& instance() {
    // NOTE: never destroyed: a child ends with _Exit while the thread still waits.
    static StopRelay* relay = new StopRelay();
    return *relay;
  }

  void watch(ChildChunkControl* control) {
    {
      std::lock_guard lock(m_mutex);
      m_watched.push_back(control);
      if (!m_started) {
        m_started = true;
        std::thread([this] { run(); }).detach();
      }
    }
    m_changed.notify_all();
  }

  void unwatch(ChildChunkControl* control) {
    std::lock_guard lock(m_mutex);
    std::erase(m_watched, control);
  }

 private:
  void run() {
    std::unique_lock lock(m_mutex);
    for (;;) {
      m_changed.wait(lock, [&] { return !m_watched.empty(); });
      for (ChildChunkControl* control : m_watched) control->relay();
      m_changed.wait_for(lock, std::chrono::milliseconds(10));
    }
  }

  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::vector<ChildChunkControl*> m_watched;
  bool m_started = false;
};

ChildChunkControl::ChildChunkControl(const Scope& item, std::size_t items)
    : ChunkControl(&m_stop),
      m_item(item),
      m_items(static_cast<double>(std::max<std::size_t>(1, items))),
      m_task_id(running_task().task_id) {
  relay();
  StopRelay::instance().watch(this);
}

ChildChunkControl::~ChildChunkControl() { StopRelay::instance().unwatch(this); }

void ChildChunkControl::started() noexcept { set_running_task(m_task_id, item_slot()); }

void ChildChunkControl::ended() noexcept { clear_running_task(); }

void ChildChunkControl::relay() noexcept {
  if (m_item.stop_requested()) m_stop.store(true, std::memory_order_relaxed);
  if (latest_fraction() != 0) m_reporting = true;  // else its function reports nothing
  if (m_reporting) m_item.progress(std::clamp(latest_progress() / m_items, 0.0, 1.0));
}

}  // namespace scale::detail
