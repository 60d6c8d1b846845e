#pragma once
// The child's end of a process-pool link: a worker process serving tasks until its link closes.
//
// A worker is a child started by a ProcessPoolManager from /proc/self/exe with the parent's
// arguments plus worker_flag; its Runtime(argc, argv) finds the flag and its link (child_link())
// and calls serve_as_worker(), which never returns. On the link (frames of wire.hpp):
//   worker → parent  hello          build_fingerprint(), so a worker of another build is refused
//   parent → worker  task (id)      a task payload (remote/task_payload.hpp)
//   worker → parent  result (id)    the invoker's encoded results
//   worker → parent  error (id)     encode_exception() of what the function threw
//   worker → parent  scope_request  (its own id) one Scope call, MessagePack {"op": ..., ...}
//                                   (process/link_backends.hpp asks, process/scope_server.hpp answers)
//   parent → worker  scope_reply    (same id) the value or the error (remote/scope_reply.hpp)
//   parent → worker  stop (id)      the task's call was stopped: a running task's Scope sees
//                                   stop_requested() (and its chunk ends before its next item);
//                                   a task still queued here is answered at once with an error
//                                   frame (scale::Cancelled) instead of run; no payload
//   worker → parent  progress (id)  the running task's items done, the running item's fraction
//                                   included: an 8-byte little-endian double, at most one per task
//                                   every 50 ms (process/task_control.hpp)
// The worker runs one task at a time and exits with status 0 when the link reads end-of-file
// (the parent closed it, or died).

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "process/child_process.hpp"
#include "process/task_control.hpp"
#include <scale/detail/wire.hpp>
#include <scale/future.hpp>

namespace scale::detail {

/// The flag a ProcessPoolManager adds to a worker's arguments. It and the cluster worker's flags
/// (cluster/worker.hpp) are the Runtime's whole table (src/core/runtime.cpp): any other --scale-*
/// argument is refused.
inline constexpr const char* worker_flag = "--scale-worker-link";

/// Serves tasks on `link` until it closes, then exits the process with status 0.
[[noreturn]] void serve_as_worker(const ChildLink& link);

/// True in a process that serves a ProcessPoolManager (serve_as_worker() was called): its own
/// ProcessPoolManagers refuse work rather than spawn grandchildren.
bool serving_as_worker() noexcept;

/// The worker's side of its link: one writer lock, replies matched to pending scope calls.
class WorkerLink {
 public:
  explicit WorkerLink(ChildLink link);

  /// Sends one frame (one write); a link that cannot be written (the parent is gone) ends the process.
  void send(FrameType type, std::uint64_t id, std::string_view payload);

  /// Sends a scope_request; the Future completes with the parent's answer (or its error).
  Future<nlohmann::json> call(nlohmann::json request);

  /// The reader thread: tasks to the queue, replies to their callers; exits the process on EOF.
  [[noreturn]] void read_loop();

  /// The next task for the executor thread, waiting for one; call task_done() after it.
  Frame next_task();
  void task_done();

  /// Runs a task: set before the reader starts.
  std::function<void(const Frame&)> runner;

  /// The control of the task running now (begun as next_task() or the reader takes it).
  TaskControl& control() noexcept { return m_control; }

  /// The running task's results, cleared for it: one buffer for every task, as one runs at a time.
  std::string& result_buffer() noexcept {
    m_result.clear();
    return m_result;
  }

  [[noreturn]] static void leave();

 private:
  void dispatch(Frame frame);
  void answer(Frame frame);
  /// A stop frame: stops the running task, or answers a queued one with scale::Cancelled.
  void stop_task(std::uint64_t id);

  ChildLink m_link;
  bool m_busy = false;  // a task is running (on either thread)
  std::mutex m_write_mutex;
  std::string m_frame;   // the frame being sent, under m_write_mutex (its capacity is kept)
  std::string m_result;  // the running task's results (its capacity is kept)
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::deque<Frame> m_tasks;
  std::unordered_map<std::uint64_t, Promise<nlohmann::json>> m_pending;
  std::uint64_t m_next_id = 0;
  TaskControl m_control;  // begun under m_mutex with m_busy
};

}  // namespace scale::detail
