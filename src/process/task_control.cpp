// The running task's control in a process-pool worker (process/task_control.hpp).

#include "process/task_control.hpp"

#include <bit>
#include <set>

#include "process/crash_context.hpp"
#include "remote/task_payload.hpp"
#include <scale/detail/bytes.hpp>
#include <scale/error.hpp>

namespace scale::detail {

std::string encode_progress_payload(double items) {
  std::string payload;
  ByteWriter(payload).u64(std::bit_cast<std::uint64_t>(items));
  return payload;
}

double decode_progress_payload(std::string_view payload) {
  if (payload.size() != 8)
    throw Error("scale: a progress frame carries " + std::to_string(payload.size()) +
                " bytes instead of 8; the worker runs another build of the program");
  return std::bit_cast<double>(ByteReader(payload, "a progress frame").u64());
}

TaskControl::TaskControl(SendProgress send) : ChunkControl(&m_stop), m_send(std::move(send)) {}

TaskControl::~TaskControl() {
  {
    std::lock_guard lock(m_mutex);
    m_closing = true;
  }
  m_cv.notify_all();
  if (m_flusher.joinable()) m_flusher.join();
}

void TaskControl::begin(std::uint64_t task_id) noexcept {
  m_task_id = task_id;
  m_stop.store(false, std::memory_order_relaxed);
  m_payload = {};
}

void TaskControl::progress(double items) noexcept {
  if (!m_reported) return hand_to_flusher(items);
  m_latest.store(items, std::memory_order_relaxed);
}

void TaskControl::hand_to_flusher(double items) noexcept {
  m_reported = true;
  {
    std::lock_guard lock(m_mutex);
    m_latest.store(items, std::memory_order_relaxed);
    m_flushing = m_task_id;
    if (!m_flusher.joinable() && !m_closing) {
      try {
        m_flusher = std::thread([this] { flush_loop(); });
      } catch (...) {
        // No thread, no progress frames: the chunk runs on, and its result still arrives.
        m_closing = true;
        log_error("a worker could not start its progress thread; this worker sends no progress");
      }
    }
  }
  m_cv.notify_one();
}

void TaskControl::flush_loop() {
  std::uint64_t sent_task = 0;  // what the last frame said
  double sent_items = 0;
  std::unique_lock lock(m_mutex);
  for (;;) {
    m_cv.wait(lock, [&] { return m_flushing != 0 || m_closing; });
    if (m_closing) return;
    const std::uint64_t task = m_flushing;
    // A task's first report goes at once (so a progress bar moves as soon as an item starts);
    // after that, one frame per interval at most, and only when the value changed.
    if (task == sent_task) {
      m_cv.wait_for(lock, progress_interval, [&] { return m_flushing != task || m_closing; });
      if (m_closing) return;
      if (m_flushing != task) continue;
    }
    // NOTE: ended() clears m_flushing under this lock and the next task's first report sets it
    // under it, so the value read here is this task's; a frame sent after the task's result is
    // ignored by the manager (it no longer holds the id).
    const double items = m_latest.load(std::memory_order_relaxed);
    if (task == sent_task && items == sent_items) continue;  // nothing new
    sent_task = task;
    sent_items = items;
    lock.unlock();
    m_send(task, items);
    lock.lock();
  }
}

bool TaskControl::first_bad_progress() noexcept {
  static std::mutex mutex;
  static std::set<std::string, std::less<>> logged;
  try {
    const std::string_view name = task_payload_name(m_payload);
    std::lock_guard lock(mutex);
    return logged.emplace(name).second;
  } catch (...) {
    return false;
  }
}

void TaskControl::started(const std::size_t* item) noexcept { set_running_task(m_task_id, item); }

void TaskControl::ended() noexcept {
  clear_running_task();
  if (!m_reported) return;
  m_reported = false;
  {
    std::lock_guard lock(m_mutex);
    m_flushing = 0;
  }
  m_cv.notify_one();
}

}  // namespace scale::detail
