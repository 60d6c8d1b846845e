#pragma once
// TaskControl: the ChunkControl of the task a process-pool worker runs now (chunk_control.hpp).
//
// A worker runs one task at a time, on its link's reader thread or its executor thread, so the
// link owns one TaskControl and begins it for each task (under the link's lock, the one that
// already marks the worker busy: nothing is added per task on the hot path).
//   - Stop: the reader sets the flag when a stop frame names the running task.
//   - Progress: Scope::progress stores the latest value in the control (one relaxed store: no
//     lock, no clock, no system call); a flusher thread, started with the first task this
//     process runs, reads the running task's value every 50 ms (progress_interval) and sends it
//     when it moved. Nothing per task but two atomic stores: a task that never reports sends
//     nothing, and the value held back is never lost while the task runs (the next read sends it).
//   - started()/ended(): the crash handler's view of the running task (crash_context.hpp).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <scale/detail/chunk_control.hpp>

namespace scale::detail {

/// The payload of a progress frame: the items done in the chunk, as an 8-byte little-endian double.
std::string encode_progress_payload(double items);
/// The items a progress frame's payload says; throws scale::Error when it is not 8 bytes.
double decode_progress_payload(std::string_view payload);

class TaskControl final : public ChunkControl {
 public:
  /// Sends one progress frame (any thread: the flusher's).
  using SendProgress = std::function<void(std::uint64_t task_id, double items)>;

  /// Progress frames go at most this often per task.
  static constexpr std::chrono::milliseconds progress_interval{50};

  explicit TaskControl(SendProgress send);
  /// Stops the flusher. (A worker's is never destroyed: the process ends with _Exit.)
  ~TaskControl();
  TaskControl(const TaskControl&) = delete;
  TaskControl& operator=(const TaskControl&) = delete;

  /// A task is taken to run (called under the link's lock, so a stop frame finds it): its id, no
  /// stop yet.
  void begin(std::uint64_t task_id) noexcept;
  /// The payload of the task about to run, alive until it ends (its name is read only when a
  /// bad progress value is logged).
  void set_payload(std::string_view payload) noexcept { m_payload = payload; }
  /// The id begin() was given.
  std::uint64_t task_id() const noexcept { return m_task_id; }
  /// The running task's call was stopped (a stop frame for task_id()).
  void request_stop() noexcept { m_stop.store(true, std::memory_order_relaxed); }

  /// Once per task name in this worker process: the call itself lives in the parent.
  bool first_bad_progress() noexcept override;
  void started() noexcept override;
  void ended() noexcept override;

 private:
  void start_flusher() noexcept;
  void flush_loop();

  std::atomic<bool> m_stop{false};
  std::uint64_t m_task_id = 0;  // written by begin() under the link's lock, read by the running task
  std::string_view m_payload;

  SendProgress m_send;
  std::atomic<std::uint64_t> m_running{0};  // the task between started() and ended(), 0 for none
  std::atomic<bool> m_flusher_started{false};
  std::mutex m_mutex;
  std::condition_variable m_cv;
  bool m_closing = false;  // guarded by m_mutex
  std::thread m_flusher;   // started with the first task (under m_mutex)
};

}  // namespace scale::detail
