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
  set_progress(0);
  m_payload = {};
}

void TaskControl::start_flusher() noexcept {
  std::lock_guard lock(m_mutex);
  if (m_flusher.joinable() || m_closing) return;
  try {
    m_flusher = std::thread([this] { flush_loop(); });
  } catch (...) {
    // No thread, no progress frames: the chunks run on, and their results still arrive.
    m_closing = true;
    log_error("a worker could not start its progress thread; this worker sends no progress");
  }
  m_flusher_started.store(true, std::memory_order_release);
}

void TaskControl::flush_loop() {
  std::uint64_t sent_task = 0;  // what the last frame said
  double sent_items = 0;
  std::uint64_t reporting_task = 0;  // the task seen reporting a fraction (the others send nothing)
  std::unique_lock lock(m_mutex);
  for (;;) {
    m_cv.wait_for(lock, progress_interval, [&] { return m_closing; });
    if (m_closing) return;
    // NOTE: the running task's id, then its progress: a task that ended in between may have its
    // last frame carry the next task's first value, but the manager ignores a frame for a task
    // whose result it has (the result went before the next task began).
    const std::uint64_t task = m_running.load(std::memory_order_acquire);
    if (task == 0) continue;
    if (latest_fraction() != 0) reporting_task = task;
    if (task != reporting_task) continue;  // its function reports nothing: its result says it all
    const double items = latest_progress();
    if (items <= 0 || (task == sent_task && items == sent_items)) continue;  // nothing new
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

void TaskControl::started() noexcept {
  set_running_task(m_task_id, item_slot());
  m_running.store(m_task_id, std::memory_order_release);
  if (!m_flusher_started.load(std::memory_order_acquire)) start_flusher();
}

void TaskControl::ended() noexcept {
  m_running.store(0, std::memory_order_release);
  clear_running_task();
}

}  // namespace scale::detail
