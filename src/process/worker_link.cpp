// The worker process of a process pool (process/worker_link.hpp): its link's reader, its executor
// and the loop that serves tasks until the link closes.

#include "process/worker_link.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include "process/crash_handler.hpp"
#include "process/link_backends.hpp"
#include "process/reused_buffer.hpp"
#include "remote/build_fingerprint.hpp"
#include "remote/scope_reply.hpp"
#include "remote/task_payload.hpp"
#include "remote/wire_error.hpp"
#include <scale/detail/loop.hpp>
#include <scale/detail/task_registry.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>

namespace scale::detail {

namespace {

/// True unless the task's function certainly takes no Scope (an unknown task counts as one that
/// does: the executor reports its error).
bool uses_scope(std::string_view payload) {
  try {
    return find_task(task_payload_name(payload)).uses_scope;
  } catch (...) {
    return true;
  }
}

std::atomic<bool> g_serving{false};

// NOTE: the result goes out before the next task starts, never batched with the next one's: the
// parent blames the first task it holds for a crash or a timeout and times each task from the
// previous result, and a progress frame for a task whose result has left is ignored only because
// that result left before the next task began.
void run_task(WorkerLink& link, SharedMemory& memory, SharedEventEmitter& events, const Frame& frame) {
  std::string& out = link.result_buffer();
  link.control().set_payload(frame.payload);
  const bool ok = run_task_payload(frame.payload, &memory, &events, out, &link.control());
  link.send(ok ? FrameType::result : FrameType::error, frame.id, out);
  trim_reused_buffer(out);
}

}  // namespace

WorkerLink::WorkerLink(ChildLink link)
    : m_link(link), m_control([this](std::uint64_t id, double items) {
        send(FrameType::progress, id, encode_progress_payload(items));
      }) {}

void WorkerLink::send(FrameType type, std::uint64_t id, std::string_view payload) {
  std::lock_guard lock(m_write_mutex);
  m_frame.clear();
  encode_frame(m_frame, type, id, payload);
  if (!send_all(m_link.fd, m_frame)) leave();
  trim_reused_buffer(m_frame);
}

Future<nlohmann::json> WorkerLink::call(nlohmann::json request) {
  Promise<nlohmann::json> promise;
  Future<nlohmann::json> reply = promise.get_future();
  std::string payload;
  nlohmann::json::to_msgpack(request, payload);
  std::uint64_t id;
  {
    std::lock_guard lock(m_mutex);
    id = ++m_next_id;
    m_pending.emplace(id, std::move(promise));
  }
  send(FrameType::scope_request, id, payload);
  return reply;
}

void WorkerLink::read_loop() {
  // NOTE: a receive timeout instead of a poll() per frame: one system call per read, and still a
  // getppid() check every second when the link is quiet.
  timeval second{1, 0};
  ::setsockopt(m_link.fd, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second);
  FrameReader reader;
  for (;;) {
    auto room = reader.prepare();
    ssize_t n = ::read(m_link.fd, room.data(), room.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (::getppid() != m_link.parent_pid) leave();
      continue;
    }
    if (n <= 0) leave();
    reader.commit(static_cast<std::size_t>(n));
    try {
      while (auto frame = reader.next()) dispatch(std::move(*frame));
    } catch (const std::exception& error) {
      log_error(std::string("worker: bad frame from the manager: ") + error.what());
      leave();
    }
  }
}

Frame WorkerLink::next_task() {
  std::unique_lock lock(m_mutex);
  m_cv.wait(lock, [&] { return !m_tasks.empty() && !m_busy; });
  m_busy = true;
  Frame frame = std::move(m_tasks.front());
  m_tasks.pop_front();
  m_control.begin(frame.id);
  return frame;
}

void WorkerLink::task_done() {
  bool queued;
  {
    std::lock_guard lock(m_mutex);
    m_busy = false;
    queued = !m_tasks.empty();
  }
  // NOTE: only a queued task is worth waking the executor for: after a task the reader ran, an
  // unconditional notify would wake it (a futex wake and two context switches) to find nothing.
  if (queued) m_cv.notify_one();
}

void WorkerLink::leave() {
  std::fflush(nullptr);
  std::_Exit(0);
}

void WorkerLink::dispatch(Frame frame) {
  switch (frame.type) {
    case FrameType::task: {
      // NOTE: a task whose function takes no Scope makes no call this reader must answer, so
      // when nothing else is running or waiting it runs right here, saving a thread hop per task.
      // Others go to the executor thread, so that this thread stays free to read scope replies.
      bool run_here = false;
      {
        std::lock_guard lock(m_mutex);
        if (!m_busy && m_tasks.empty() && !uses_scope(frame.payload)) {
          m_busy = true;
          m_control.begin(frame.id);
          run_here = true;
        } else {
          m_tasks.push_back(std::move(frame));
        }
      }
      if (run_here) {
        runner(frame);
        task_done();
      } else {
        m_cv.notify_one();
      }
      return;
    }
    case FrameType::scope_reply:
      answer(std::move(frame));
      return;
    case FrameType::stop:
      stop_task(frame.id);
      return;
    case FrameType::shutdown:
      leave();
    default:
      return;
  }
}

void WorkerLink::answer(Frame frame) {
  std::optional<Promise<nlohmann::json>> promise;
  {
    std::lock_guard lock(m_mutex);
    auto at = m_pending.find(frame.id);
    if (at == m_pending.end()) return;
    promise.emplace(std::move(at->second));
    m_pending.erase(at);
  }
  try {
    promise->set_value(decode_scope_reply(frame.payload));
  } catch (...) {
    promise->set_exception(std::current_exception());
  }
}

void WorkerLink::stop_task(std::uint64_t id) {
  // NOTE: a task that runs on this reader thread cannot be reached here until it returns (it
  // takes no Scope, so it could not look anyway); its manager kills the worker after the grace.
  std::optional<Frame> withdrawn;
  {
    std::lock_guard lock(m_mutex);
    if (m_busy && m_control.task_id() == id) {
      m_control.request_stop();
      return;
    }
    auto at = std::find_if(m_tasks.begin(), m_tasks.end(), [&](const Frame& task) { return task.id == id; });
    if (at == m_tasks.end()) return;  // already answered
    withdrawn.emplace(std::move(*at));
    m_tasks.erase(at);
  }
  std::string out;
  encode_exception(std::make_exception_ptr(Cancelled(cancelled_message())), out);
  send(FrameType::error, id, out);
}

bool serving_as_worker() noexcept { return g_serving.load(std::memory_order_relaxed); }

void serve_as_worker(const ChildLink& child) {
  g_serving.store(true, std::memory_order_relaxed);
  // A Ctrl-C in a terminal reaches the whole process group: the manager decides what its workers
  // do (it stops their chunks and, after the grace, kills them), so a worker ignores SIGINT.
  ::signal(SIGINT, SIG_IGN);
  // Before any item runs: a crash leaves its record for the parent (process/crash_handler.hpp).
  install_crash_handler();
  // NOTE: never destroyed: the process ends with _Exit while the reader thread still runs.
  auto* link = new WorkerLink(child);
  SharedMemory memory(make_link_memory(*link));
  SharedEventEmitter events(make_link_events(*link));
  link->runner = [link, &memory, &events](const Frame& task) { run_task(*link, memory, events, task); };
  link->send(FrameType::hello, 0, build_fingerprint());
  std::thread([link] {
    add_crash_signal_stack();  // it runs tasks too (WorkerLink::dispatch)
    link->read_loop();
  }).detach();
  for (;;) {
    Frame task = link->next_task();
    run_task(*link, memory, events, task);
    link->task_done();
  }
}

}  // namespace scale::detail
