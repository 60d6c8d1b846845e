// ProcessPoolManager: worker processes spawned on demand (or to a target: resize, adapt), one
// chunk at a time each, with chunks rerun (and split) when a worker dies. See
// src/process/worker_link.hpp for the protocol and src/process/pool_sizing.hpp for the target.
//
// Routing: the pool is one worker that offers ProcessPoolOptions::provides as a whole (its
// children share the machine's GPUs). A task of a call with RunOptions::resources takes them from
// m_ledger when it is sent to a child and gives them back when its answer comes or its child is
// gone; such tasks wait in a queue of their own class (src/core/routed_queue.hpp), so the tasks
// behind them go ahead. A task that holds amounts is sent only to an idle child and nothing is
// pipelined behind it: it holds them only while it runs, and a long one (a GPU kernel) does not
// hold up a task queued behind it on its child. The pool sizes itself on the tasks that could
// start (a task waiting for amounts needs no new child). A call the pool can never meet fails at
// submit with Unsatisfiable. A worker cannot map on its own pool (it refuses), so no chunk here
// is nested in another of this pool's chunks.
//
// Worker identity (keyed_by, broadcast, on_every_worker; docs/routing.md):
//   - Child slots. Every child spawned takes a slot k (id "child-<k>"), reserved when its spawn
//     is asked for: the lowest slot with no child, no spawn and no failed setup, or the very slot
//     whose queued chunks need a child. A child that dies or retires frees its slot, so its
//     replacement takes it back. Unkeyed, unpinned chunks pay one branch at submit and one at
//     take (m_routed == 0) and go on the shared queue as before.
//   - Keys go by rendezvous_pick over the key slots: the slots below concurrency() (max_workers on
//     demand, the target under resize/adapt) whose setups have not failed, whether or not a child
//     is in them now. Not over the live children: an on-demand pool grows while a call runs, and a
//     key would then split across two children within one call; a keyed call on a cold pool also
//     spreads over the slots (each slot with queued chunks gets its child) instead of staying on
//     the first child. So a key keeps its slot while the slot count stays, and a killed child's
//     keys wait for its respawned child (reserved at once, as the slot has chunks queued) instead of
//     spilling onto the others and moving back: only its keys move, to a new process. Keys move
//     when concurrency() moves (resize, adapt's target) and off a slot whose setup failed, each to
//     its next choice; chunks queued for such a slot are re-queued there.
//   - Pinned chunks (Chunk::worker) wait in their slot's queue; a pinned chunk whose child is gone
//     (at submit, queued, or while it runs) fails with NoWorkers naming it, never reruns elsewhere.
//   - Setups are encoded once (add_setup) and sent to each ready child as tasks, in order, before
//     anything else it is given; a child takes no chunk until every setup has answered without
//     error (Worker::setups_done), so no chunk can run before them, on late spawns and respawns too.
//     A setup that throws retires its child (its link is shut down and it exits: a failed setup
//     may have left it half set up, and an idle child would hold a slot and a process for
//     nothing), marks its slot failed, and counts in setups_failed; a child that dies in a setup
//     counts the same, so a setup that crashes children cannot respawn them for ever. After a
//     failure a child is spawned only while failures plus children still trying their setups stay
//     below max_workers; at max_workers failures none is, and with no child left that runs chunks
//     every queued chunk and every later call fails with the setup's error (RemoteError), until
//     resize, adapt or add_setup gives children another try.

#include <scale/managers/process_pool.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "process/child_process.hpp"
#include "process/crash_capsule.hpp"
#include "process/crash_record.hpp"
#include "process/reused_buffer.hpp"
#include "process/pool_sizing.hpp"
#include "process/program_arguments.hpp"
#include "process/scope_server.hpp"
#include "process/task_control.hpp"
#include "process/worker_link.hpp"
#include "core/rendezvous.hpp"
#include "core/short_chunks.hpp"
#include "core/resource_ledger.hpp"
#include "core/worker_slot_id.hpp"
#include "core/routed_queue.hpp"
#include "remote/build_fingerprint.hpp"
#include "remote/task_group.hpp"
#include "remote/task_payload.hpp"
#include "remote/task_result.hpp"
#include "remote/wire_error.hpp"
#include <scale/detail/task_registry.hpp>
#include <scale/detail/wire.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>

namespace scale::detail {

namespace {

/// The spawner every pool shares: one long-lived thread, so PR_SET_PDEATHSIG ties the workers to
/// this process rather than to whichever thread first needed a worker.
ProcessSpawner& pool_spawner() {
  static ProcessSpawner* spawner = new ProcessSpawner();  // NOTE: never destroyed; see above
  return *spawner;
}

using Clock = std::chrono::steady_clock;

/// No slot: a task on the shared queue.
constexpr std::size_t no_slot = static_cast<std::size_t>(-1);

struct Task {
  std::shared_ptr<TaskGroup> group;  // null for a setup (it completes no Promise)
  Chunk chunk;
  unsigned attempts = 0;  // times this exact range was lost with its worker
  std::string frame;      // encoded, while it waits for an idle worker (see send_task_locked)
  std::size_t slot = no_slot;  // keyed or pinned: the child slot whose queue it waits in
};

const Resources& resources_of(const Task& task) noexcept { return task.chunk.job->policy().requirement.resources; }

struct InFlight {
  std::shared_ptr<Task> task;
  std::uint64_t id = 0;
  Clock::time_point sent;
  bool holds = false;         // took resources_of(*task) from the pool's ledger
  std::int64_t progress = 0;  // what its progress frames added to the Job (Job::progress_units)
  bool stopped = false;       // its call was stopped: a stop frame went to the worker
  Clock::time_point kill_at = Clock::time_point::max();  // stopped: when its grace ends
  bool setup = false;         // an on_every_worker setup, not a chunk of a call
  std::size_t bytes = 0;      // its task frame's size (see send_task_locked)
};

/// Tasks a worker holds at once (see ProcessPool::pump): two, and short_chunks_per_thread while
/// chunks are short (core/short_chunks.hpp).
constexpr std::size_t pipeline_depth = 2;
/// The most bytes of task frames queued behind the task a busy worker runs (see send_task_locked).
constexpr std::size_t max_pipelined_frame = 64 * 1024;

struct Worker {
  ChildProcess child;
  CrashRecordFile crash_record;  // what it leaves if it dies of a crash signal
  pid_t pid = -1;
  int fd = -1;
  std::size_t slot = 0;  // its child slot; id is "child-<slot>"
  std::string id;
  std::size_t setups_sent = 0;  // of the pool's setups, sent to it (in order)
  std::size_t setups_done = 0;  // of those, answered without error: it takes chunks once all are
  bool setup_failed = false;    // a setup threw (or it died in one): it takes no chunk and retires
  bool ready = false;     // hello received and accepted
  bool retiring = false;  // idle timeout or above the target: its link is shut down, its exit is not a loss
  bool draining = false;  // above the target while busy: gets no new task, retires once idle
  bool timed_out = false;
  bool stop_killed = false;  // killed because it ran a stopped chunk past its grace: not a loss
  std::deque<InFlight> inflight;  // sent, in the order the worker runs them; the first is running
  Clock::time_point deadline = Clock::time_point::max();  // of the first
  std::chrono::milliseconds timeout{0};                   // of the first
  Clock::time_point idle_since = Clock::now();
  Clock::time_point last_answer = Clock::time_point::min();  // its previous result (chunk timing)
  std::mutex write_mutex;

  void start_front(std::chrono::milliseconds limit) {
    timeout = limit;
    deadline = limit.count() > 0 ? Clock::now() + limit : Clock::time_point::max();
  }

  bool send(std::string_view frame) {
    std::lock_guard lock(write_mutex);
    return send_all(fd, frame);
  }

  /// Queues a frame (under the pool's lock, so in in-flight order) behind those not yet sent;
  /// true when the caller must flush() once it has released the pool's lock.
  bool queue(std::string_view frame) {
    std::lock_guard lock(out_mutex);
    outbox.append(frame);
    if (flushing) return false;
    flushing = true;
    return true;
  }

  /// Sends what is queued, all of it in one write, until nothing is left. A failed send means the
  /// worker died: its reader sees end-of-file and reruns its tasks.
  void flush() {
    for (;;) {
      {
        std::lock_guard lock(out_mutex);
        if (outbox.empty()) {
          flushing = false;
          trim_reused_buffer(sending);
          return;
        }
        sending.swap(outbox);  // the outbox takes the sent (empty) buffer back, with its capacity
      }
      send(sending);
      sending.clear();
    }
  }

  // NOTE: task frames are never sent under the pool's lock: a send may wait for the worker to
  // read, and the worker may be waiting for our reader, which may be waiting for that lock.
  std::mutex out_mutex;
  std::string outbox;    // frames queued and not yet sent, back to back (guarded by out_mutex)
  std::string sending;   // what flush() writes now (only the thread that set flushing touches it)
  bool flushing = false;  // guarded by out_mutex
};

/// What a pool needs from its manager: the running calls' backlog, and a way to tell them that
/// concurrency() grew. Called without the pool's lock.
struct CallsHooks {
  std::function<std::size_t()> backlog;
  std::function<void()> concurrency_grew;
};

std::string no_workers_message() {
  return "scale::NoWorkers: this ProcessPoolManager was resized to 0 workers and does not adapt, so nothing can "
         "run the map; call resize(n) with n > 0 or adapt(policy) first";
}

std::string nested_pool_message() {
  return "scale: a ProcessPoolManager cannot run work inside a worker process of a ProcessPoolManager (this process "
         "is one, a child of pid " +
         std::to_string(::getppid()) +
         "): a worker does not spawn workers of its own. Run the nested map on a ThreadPoolManager inside the worker "
         "function, or map on the ProcessPoolManager from the parent";
}

constexpr std::string_view slot_prefix = "child-";
std::string child_id(std::size_t slot) { return slot_id(slot_prefix, slot); }

std::string gone_child_message(const std::string& worker) {
  return "scale::NoWorkers: this ProcessPoolManager has no live child \"" + worker +
         "\" (it exited, was lost, retired, or its setup failed); broadcast_targets() names the live ones";
}

}  // namespace

class ProcessPool : public std::enable_shared_from_this<ProcessPool> {
  /// The pool's lock; Promises finished under it complete once it is released.
  class Locked : public CompletingLock {
   public:
    explicit Locked(ProcessPool& pool) : CompletingLock(pool.m_mutex, pool.m_completions) {}
  };

 public:
  ProcessPool(ProcessPoolOptions options, CallsHooks hooks)
      : m_options(normalized(options)),
        m_fingerprint(build_fingerprint()),
        m_hooks(std::move(hooks)),
        m_sizing(m_options.max_workers),
        m_concurrency(m_options.max_workers),
        m_ledger(m_options.provides, "ProcessPoolOptions::provides") {
    m_sizing.on_demand(0, m_options.min_workers);
    m_counters.workers_target = m_sizing.target();
    // A worker's own pool would spawn grandchildren of the same program: it refuses every map.
    if (serving_as_worker()) m_refused = std::make_exception_ptr(Error(nested_pool_message()));
  }

  /// Starts min_workers (each spawn returns once the child is exec'd, about a millisecond) and the
  /// watchdog.
  void start() {
    {
      Locked lock(*this);
      publish_locked();  // the key slots
    }
    for (std::size_t i = 0; i < m_options.min_workers && !m_refused; ++i) {
      std::size_t slot;
      {
        Locked lock(*this);
        slot = reserve_locked(std::nullopt);
      }
      CrashRecordFile record = CrashRecordFile::create();
      try {
        ChildProcess child = pool_spawner().spawn(spawn_options(record));
        spawned(std::move(child), nullptr, std::move(record), slot);
      } catch (...) {
        spawned(ChildProcess(), std::current_exception(), CrashRecordFile(), slot);
      }
    }
    m_watchdog = std::thread([self = shared_from_this()] { self->watch(); });
  }

  std::size_t concurrency() const noexcept { return m_concurrency.load(std::memory_order_relaxed); }
  /// ProcessPoolManager::chunks_in_flight (core/short_chunks.hpp).
  std::size_t chunks_in_flight(std::size_t workers) const noexcept { return m_window.chunks_in_flight(workers); }

  ManagerStats stats() const { return m_counters.snapshot(); }

  std::vector<pid_t> pids() const {
    std::lock_guard lock(m_mutex);
    std::vector<pid_t> pids;
    for (auto& worker : m_workers) pids.push_back(worker->pid);
    return pids;
  }

  /// ProcessPoolManager::holdings.
  ProcessPoolManager::Holdings holdings() const {
    std::lock_guard lock(m_mutex);
    ProcessPoolManager::Holdings held;
    held.tasks_done = m_counters.done.load(std::memory_order_relaxed);
    for (const auto& worker : m_workers)
      held.children.push_back({worker->pid, worker->inflight.size(), queued_behind_running(*worker)});
    return held;
  }

  /// The children that said hello and have not failed a setup, for a report (report_to).
  std::vector<ReportedWorker> reported_workers() const {
    std::lock_guard lock(m_mutex);
    std::vector<ReportedWorker> reported;
    for (const auto& worker : m_workers) {
      if (!worker->ready || worker->setup_failed) continue;
      ReportedWorker entry;
      entry.id = worker->id;
      entry.pid = static_cast<int>(worker->pid);
      entry.draining = worker->draining || worker->retiring;
      reported.push_back(std::move(entry));
    }
    return reported;
  }

  /// The live children's ids, in slot order; with none, a child is started first (on demand, or
  /// when all are retiring) and the Future completes once it is spawned.
  Future<std::vector<std::string>> targets() {
    std::vector<std::size_t> spawns;
    std::exception_ptr error;
    std::optional<std::vector<std::string>> ids;
    Future<std::vector<std::string>> future;
    {
      Locked lock(*this);
      if (m_stopping)
        error = std::make_exception_ptr(Stopped());
      else if (m_refused)
        error = m_refused;
      else if (m_sizing.mode() == PoolSizing::Mode::fixed && m_sizing.target() == 0)
        error = std::make_exception_ptr(NoWorkers(no_workers_message()));
      else if (m_setups_exhausted && !usable_child_locked())
        error = m_setup_error;
      else if (auto live = target_ids_locked(); !live.empty())
        ids = std::move(live);
      else {
        Promise<std::vector<std::string>> promise;
        future = promise.get_future();
        m_target_waiters.push_back(std::move(promise));
        if (m_spawning == 0 && can_spawn_locked() && m_workers.size() < m_options.max_workers)
          spawns.push_back(reserve_locked(std::nullopt));
      }
    }
    for (std::size_t slot : spawns) spawn(slot);
    if (error) return make_failed_future<std::vector<std::string>>(std::move(error));
    if (ids) return make_ready_future(std::move(*ids));
    return future;
  }

  /// A setup every child runs before its next chunk: encoded once here, sent to each child as a
  /// task. Throws scale::NotShippable when it cannot leave this process.
  void add_setup(std::shared_ptr<Job> setup) {
    std::string why = setup->remote_problem();
    if (why.empty() && setup->task_name().empty())
      why = "scale: this setup has no registered task and cannot run in a worker process";
    if (!why.empty())
      throw NotShippable(why + " (ProcessPoolManager::on_every_worker: the setup function must capture nothing)");
    std::string frame;
    const std::size_t at = begin_frame(frame, FrameType::task, 0);
    append_task_payload(Chunk{setup, 0, 1}, frame);
    end_frame(frame, at);
    {
      Locked lock(*this);
      if (m_stopping) return;
      m_setups.push_back(std::move(setup));
      m_setup_frames.push_back(std::move(frame));
      m_setup_count = m_setups.size();
      retry_setups_locked();  // a new setup: children may be tried again
    }
    pump();  // ready children run it now, before their next chunk
  }

  Future<void> submit(Chunk chunk) {
    Future<void> future;
    auto task = start_remote_task<Task>(std::move(chunk), {}, m_counters, future);
    if (!task) return future;
    bool adapt_now = false;
    // The ledger's provides never change on a pool: read without the lock.
    const Requirement& requirement = task->chunk.job->policy().requirement;
    const bool can_meet = requirement.empty() || m_ledger.can_meet(requirement);
    {
      Locked lock(*this);
      if (m_stopping || m_refused) {
        auto error = m_stopping ? std::make_exception_ptr(Stopped()) : m_refused;
        task->group->remaining = 1;
        finish_locked(*task, error);
        return future;
      }
      if (!can_meet) {
        finish_locked(*task, std::make_exception_ptr(Unsatisfiable(
                                 unsatisfiable_message(requirement, {{"process-pool", m_ledger.provides()}}))));
        return future;
      }
      if (m_sizing.mode() == PoolSizing::Mode::fixed && m_sizing.target() == 0) {
        finish_locked(*task, std::make_exception_ptr(NoWorkers(no_workers_message())));
        return future;
      }
      if (m_setups_exhausted && !usable_child_locked()) {
        finish_locked(*task, m_setup_error);
        return future;
      }
      // The one branch an unkeyed, unpinned chunk pays: keyed and pinned ones wait in a slot's queue.
      if (task->chunk.keyed() || !task->chunk.worker.empty()) {
        if (std::exception_ptr refused = route_locked(*task)) {
          finish_locked(*task, std::move(refused));
          return future;
        }
      }
      queue_locked(std::move(task), false);
      ++m_counters.queued;
      // A chunk not from a call the manager counts (submitted directly) must still grow a pool
      // that adapts from zero.
      adapt_now = m_sizing.mode() == PoolSizing::Mode::adapt && m_sizing.target() == 0;
    }
    if (adapt_now) reevaluate();
    pump_after_submit();
    return future;
  }

  /// After a submit. On the loop thread, one pump once the loop has run what it holds now: the
  /// dispatch's continuations of chunks answered together each submit one chunk there, and one
  /// pump then sends them all, one write per worker. Elsewhere, at once.
  void pump_after_submit() {
    if (!on_loop_thread()) return pump();
    if (m_pump_posted.exchange(true, std::memory_order_acq_rel)) return;
    post([weak = weak_from_this()] {
      if (auto self = weak.lock()) {
        self->m_pump_posted.store(false, std::memory_order_release);
        self->pump();
      }
    });
  }

  // ----- stopping a call -----

  /// A call was stopped (its Job's stop flag is set): its queued tasks fail at once, and each
  /// worker holding one of its tasks gets a stop frame for it. The watchdog kills a worker still
  /// running one once the call's grace has passed (kill_stopped_locked).
  void stop(const std::shared_ptr<Job>& job) {
    std::vector<std::shared_ptr<Worker>> to_flush;
    {
      Locked lock(*this);
      if (m_stopping) return;
      withdraw_locked(*job);
      const auto kill_at = Clock::now() + job->policy().grace;
      for (auto& worker : m_workers) {
        bool queued = false;
        // NOTE: the last first: the worker withdraws a task queued behind the running one before
        // the running one learns of the stop, so it cannot end and start the next one between.
        for (auto it = worker->inflight.rbegin(); it != worker->inflight.rend(); ++it) {
          InFlight& f = *it;
          if (f.stopped || f.task->chunk.job.get() != job.get()) continue;
          f.stopped = true;
          f.kill_at = kill_at;
          std::string frame;
          encode_frame(frame, FrameType::stop, f.id, {});
          // NOTE: through the worker's outbox, so it follows the task frame it names.
          queued = worker->queue(frame) || queued;
        }
        if (queued) to_flush.push_back(worker);
      }
    }
    // A stop frame is 16 bytes: it fits the link's buffer even behind a pipelined task frame
    // (max_pipelined_frame), so this never waits for a worker busy on its reader thread.
    for (auto& worker : to_flush) worker->flush();
  }

  // ----- the worker count: resize, adapt -----

  void resize(std::size_t n) {
    bool grew = false;
    {
      Locked lock(*this);
      const std::size_t before = m_sizing.concurrency();
      m_sizing.set_fixed(n);
      retry_setups_locked();
      publish_locked();
      grew = m_sizing.concurrency() > before;
      if (m_sizing.target() == 0) fail_queue_locked(std::make_exception_ptr(NoWorkers(no_workers_message())));
    }
    pump();
    if (grew) m_hooks.concurrency_grew();
  }

  void adapt(const ScalingPolicy& policy) {
    const std::size_t calls = m_hooks.backlog();
    bool grew = false;
    {
      Locked lock(*this);
      const std::size_t before = m_sizing.concurrency();
      std::size_t live = m_spawning;
      for (auto& worker : m_workers)
        if (!worker->retiring && !worker->draining) ++live;
      m_sizing.set_adapt(policy, live);  // throws std::invalid_argument before changing anything
      retry_setups_locked();
      m_sizing.step(Clock::now(), backlog_locked(calls));
      publish_locked();
      grew = m_sizing.concurrency() > before;
    }
    pump();
    if (grew) m_hooks.concurrency_grew();
  }

  /// Adapt mode: steps the controller on the backlog now and moves to its target. Any thread,
  /// without the pool's lock; returns at once (spawning is asynchronous).
  void reevaluate() {
    if (!m_adapting.load(std::memory_order_relaxed)) return;
    const std::size_t calls = m_hooks.backlog();
    bool moved = false;
    bool grew = false;
    {
      Locked lock(*this);
      if (m_stopping || m_sizing.mode() != PoolSizing::Mode::adapt) return;
      const std::size_t before = m_sizing.concurrency();
      moved = m_sizing.step(Clock::now(), backlog_locked(calls));
      publish_locked();
      grew = m_sizing.concurrency() > before;
    }
    if (moved) pump();  // spawns or retires toward the new target
    if (grew) m_hooks.concurrency_grew();
  }

  /// The backlog adapt scales on: the running calls' (`calls`), or the chunks this pool holds
  /// when that is more (chunks submitted by no call the manager counts).
  std::size_t backlog_locked(std::size_t calls) const {
    return std::max(calls, startable_locked() + m_routed + m_counters.running.load(std::memory_order_relaxed));
  }

  /// Closes every link, fails what is queued or running with Stopped, waits for the readers (and
  /// so for the workers' exits) and the watchdog.
  void shutdown() {
    std::deque<std::shared_ptr<Task>> abandoned;
    std::vector<Promise<std::vector<std::string>>> waiters;
    {
      Locked lock(*this);
      m_stopping = true;
      for (auto& task : m_queue.take_all()) abandoned.push_back(std::move(task));
      for (auto& slot : m_slots)
        for (auto& task : slot.queue.take_all()) abandoned.push_back(std::move(task));
      m_routed = 0;
      m_counters.queued -= abandoned.size();
      for (auto& task : abandoned) finish_locked(*task, std::make_exception_ptr(Stopped()));
      for (auto& worker : m_workers) ::shutdown(worker->fd, SHUT_RDWR);
      waiters = std::exchange(m_target_waiters, {});
    }
    for (auto& waiter : waiters) waiter.set_exception(std::make_exception_ptr(Stopped()));
    m_cv.notify_all();
    if (m_watchdog.joinable()) m_watchdog.join();
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_readers == 0 && m_spawning == 0; });
    // Workers whose spawn completed during the shutdown were killed at once; they are gone too
    // before the manager is (the spawner thread reaps them, so waiting here cannot block it).
    std::vector<ChildProcess> unborn = std::move(m_unborn);
    lock.unlock();
    for (auto& child : unborn) child.wait_for(std::chrono::seconds(2));
  }

 private:
  // ----- slots: keyed and pinned chunks, setups -----

  /// A child slot: its child (while it has one), whether one is being spawned for it, and the
  /// keyed and pinned chunks waiting for it.
  struct Slot {
    std::shared_ptr<Worker> worker;
    bool spawning = false;
    bool failed = false;  // a setup failed on its child: never used again, out of the key slots
    RoutedQueue<std::shared_ptr<Task>> queue;
  };

  /// Under the lock: the slot a keyed or pinned task waits for (task.slot), or the error it fails with.
  std::exception_ptr route_locked(Task& task) {
    if (!task.chunk.worker.empty()) {
      const std::optional<std::size_t> slot = slot_of(slot_prefix, task.chunk.worker);
      if (slot && *slot < m_slots.size() && serving_locked(*slot)) {
        task.slot = *slot;
        return nullptr;
      }
      return std::make_exception_ptr(NoWorkers(gone_child_message(task.chunk.worker)));
    }
    task.slot = pick_locked(task.chunk.key);
    return nullptr;
  }

  /// Under the lock: slot k has a child that takes chunks (spawned, maybe not ready yet).
  bool serving_locked(std::size_t k) const {
    const Slot& slot = m_slots[k];
    return slot.worker && !slot.failed && !slot.worker->retiring && !slot.worker->setup_failed;
  }

  bool key_slot_locked(std::size_t k) const { return k < m_key_span && !m_slots[k].failed; }

  std::size_t pick_locked(std::string_view key) const {
    return m_key_ids.empty() ? no_slot : m_key_slots[rendezvous_pick(key, m_key_ids)];
  }

  /// Queues a task behind (or before: `front`) the others of its queue: its slot's, or the shared one.
  void queue_locked(std::shared_ptr<Task> task, bool front) {
    if (task->slot != no_slot && task->chunk.worker.empty() && !key_slot_locked(task->slot))
      task->slot = pick_locked(task->chunk.key);  // its slot left the key slots: its next choice
    const Resources& resources = resources_of(*task);
    RoutedQueue<std::shared_ptr<Task>>* queue = &m_queue;
    if (task->slot != no_slot) {
      queue = &m_slots[task->slot].queue;
      ++m_routed;
    }
    if (front)
      queue->push_front(std::move(task), resources);
    else
      queue->push_back(std::move(task), resources);
  }

  bool queued_locked() const noexcept { return !m_queue.empty() || m_routed != 0; }

  /// Under the lock: reserves a slot for a child about to be spawned (`wanted`, or the lowest one
  /// with no child, no spawn and no failed setup).
  std::size_t reserve_locked(std::optional<std::size_t> wanted) {
    std::size_t k = 0;
    if (wanted) {
      k = *wanted;
    } else {
      while (k < m_slots.size() && (m_slots[k].worker || m_slots[k].spawning || m_slots[k].failed)) ++k;
    }
    while (m_slots.size() <= k) m_slots.emplace_back();
    m_slots[k].spawning = true;
    ++m_spawning;
    return k;
  }

  /// A new child may be spawned: not refused, and, once a setup has failed, the failures plus the
  /// children still trying their setups (running them, or being spawned) stay below max_workers,
  /// so at most max_workers children ever fail setups before resize, adapt or add_setup.
  bool can_spawn_locked() const noexcept {
    if (m_refused || m_setups_exhausted) return false;
    if (m_setup_failures == 0) return true;
    std::size_t trying = m_spawning;
    for (auto& worker : m_workers)
      if (!worker->retiring && !worker->setup_failed && worker->setups_done < m_setup_count) ++trying;
    return m_setup_failures + trying < m_options.max_workers;
  }

  /// A child that runs (or may yet run) chunks: one whose setups have not failed, or a spawn.
  bool usable_child_locked() const {
    if (m_spawning != 0) return true;
    for (auto& worker : m_workers)
      if (!worker->retiring && !worker->setup_failed) return true;
    return false;
  }

  std::vector<std::string> target_ids_locked() const {
    std::vector<std::string> ids;
    for (auto& worker : m_workers)
      if (!worker->retiring && !worker->draining && !worker->setup_failed) ids.push_back(worker->id);
    return ids;
  }

  /// Under the lock (from publish_locked): the key slots are the slots below concurrency() whose
  /// setups have not failed; when they change, keyed chunks queued for a slot that left them go
  /// to their next choice.
  void refresh_keys_locked() {
    const std::size_t span = m_sizing.concurrency();
    if (span == m_key_span && !m_keys_dirty) return;
    m_key_span = span;
    m_keys_dirty = false;
    while (m_slots.size() < span) m_slots.emplace_back();
    m_key_slots.clear();
    m_key_ids.clear();
    for (std::size_t k = 0; k < span; ++k)
      if (!m_slots[k].failed) {
        m_key_slots.push_back(k);
        m_key_ids.push_back(child_id(k));
      }
    if (m_routed == 0) return;
    for (std::size_t k = 0; k < m_slots.size(); ++k) {
      if (key_slot_locked(k)) continue;
      auto moved = m_slots[k].queue.take_all_if([](const std::shared_ptr<Task>& task) { return task->chunk.worker.empty(); });
      m_routed -= moved.size();
      for (auto& task : moved) queue_locked(std::move(task), false);
    }
  }

  /// A setup's answer (`at` in the worker's in-flight list, erased here).
  void setup_answered_locked(Worker& worker, std::deque<InFlight>::iterator at, const Frame& frame) {
    const bool was_running = at == worker.inflight.begin();
    worker.inflight.erase(at);
    if (was_running && !worker.inflight.empty())
      worker.start_front(worker.inflight.front().task->chunk.job->policy().timeout);
    worker.idle_since = Clock::now();
    if (worker.setup_failed) return;
    if (frame.type == FrameType::result) {
      ++worker.setups_done;
      return;
    }
    std::exception_ptr error;
    try {
      error = decode_exception(frame.payload);
    } catch (...) {
      error = std::current_exception();
    }
    setup_failed_locked(worker, std::move(error));
  }

  /// A setup threw on `worker` (or it died in one): it retires (its link is shut down, so it
  /// exits) and its slot is never used again; its pinned chunks fail with `error`, its keyed ones
  /// go to their next choice. Once setups have failed on max_workers children no more are
  /// spawned, and with no child left that runs chunks everything queued fails with `error`.
  void setup_failed_locked(Worker& worker, std::exception_ptr error) {
    if (worker.setup_failed) return;
    worker.setup_failed = true;
    ++m_counters.setups_failed;
    Slot& slot = m_slots[worker.slot];
    slot.failed = true;
    m_keys_dirty = true;
    m_setup_error = error;
    m_setups_exhausted = ++m_setup_failures >= m_options.max_workers;
    if (!worker.retiring) retire_locked(worker);
    auto pinned = slot.queue.take_all_if([](const std::shared_ptr<Task>& task) { return !task->chunk.worker.empty(); });
    m_routed -= pinned.size();
    m_counters.queued -= pinned.size();
    for (auto& task : pinned) finish_locked(*task, error);
    refresh_keys_locked();
    if (m_setups_exhausted && !usable_child_locked()) fail_queue_locked(error);
  }

  /// resize, adapt and add_setup give children another try at the setups.
  void retry_setups_locked() {
    m_setup_failures = 0;
    m_setups_exhausted = false;
  }

  // ----- assigning work -----

  /// Gives queued tasks to workers and spawns workers for the rest (up to the maximum). A worker
  /// holds up to pipeline_depth tasks (short_chunks_per_thread while chunks are short): it runs
  /// the first while the next ones are already on their way, so a round trip never leaves it
  /// idle. Frames are queued per worker under the lock (so each worker receives its tasks in the
  /// order of its in-flight list) and sent after it.
  void pump() {
    Pumped pumped;
    {
      Locked lock(*this);
      pump_locked(pumped);
    }
    pumped.run(*this);
  }

  /// What a pump leaves to do once the pool's lock is released: children to spawn, workers whose
  /// outboxes to flush.
  struct Pumped {
    std::vector<std::size_t> spawns;
    std::vector<std::shared_ptr<Worker>> to_flush;

    // NOTE: to_flush borrows this thread's vector and gives it back, so a pump per result costs
    // no allocation; a pump nested in this one (a continuation run inline by a completion) finds
    // it taken and makes its own.
    Pumped() : to_flush(std::move(t_flush_scratch)) {}
    ~Pumped() {
      to_flush.clear();
      if (to_flush.capacity() > t_flush_scratch.capacity()) t_flush_scratch = std::move(to_flush);
    }
    Pumped(const Pumped&) = delete;
    Pumped& operator=(const Pumped&) = delete;

    void run(ProcessPool& pool) {
      for (std::size_t slot : spawns) pool.spawn(slot);
      for (auto& worker : to_flush) worker->flush();
    }

    static inline thread_local std::vector<std::shared_ptr<Worker>> t_flush_scratch;
  };

  /// pump() under the lock: what it gives out is queued, and what is left to do goes in `pumped`.
  void pump_locked(Pumped& pumped) {
    std::vector<std::size_t>& spawns = pumped.spawns;
    std::vector<std::shared_ptr<Worker>>& to_flush = pumped.to_flush;
    {
      if (m_stopping) return;
      const bool on_demand = m_sizing.mode() == PoolSizing::Mode::on_demand;
      if (!on_demand) spawns = rebalance_locked();
      // Setups first: a ready child is sent those it has not run, and takes no chunk until all
      // have answered (see the file comment).
      if (m_setup_count != 0)
        for (auto& worker : m_workers)
          if (worker->ready && !worker->retiring && worker->setups_sent < m_setup_count && send_setups_locked(worker))
            to_flush.push_back(worker);
      // Idle workers first, then second slots, so that work spreads before it queues up.
      bool deferred = false;
      const std::size_t depth_limit = m_window.deep() ? short_chunks_per_thread : pipeline_depth;
      for (std::size_t depth = 0; depth < depth_limit && queued_locked() && !deferred; ++depth) {
        for (auto& worker : m_workers) {
          if (!queued_locked() || deferred) break;
          if (!worker->ready || worker->retiring || worker->draining || worker->inflight.size() != depth ||
              worker->setups_done != m_setup_count)
            continue;
          // Nothing goes behind a task that holds amounts; one that takes them goes to an idle worker.
          if (depth > 0 && worker->inflight.front().holds) continue;
          auto task = take_next_locked(depth == 0, worker->slot);
          if (!task) {
            if (m_routed == 0) break;  // nothing any worker may take
            continue;                  // the rest waits for other slots
          }
          Sent sent = send_task_locked(worker, std::move(task));
          if (sent == Sent::queued_flush && std::find(to_flush.begin(), to_flush.end(), worker) == to_flush.end())
            to_flush.push_back(worker);
          deferred = sent == Sent::deferred;
        }
        if (depth == 0 && !on_demand) {
          if (m_spawning >= startable_locked()) break;  // leave the rest for the workers being spawned
        } else if (depth == 0) {
          std::size_t available = m_spawning;
          for (auto& worker : m_workers)
            if (!worker->retiring && worker->inflight.empty()) ++available;
          const std::size_t total = m_workers.size() + m_spawning;
          const std::size_t startable = startable_locked();
          if (startable > available && total < m_options.max_workers && can_spawn_locked()) {
            const std::size_t n = std::min(startable - available, m_options.max_workers - total);
            for (std::size_t i = 0; i < n && can_spawn_locked(); ++i) spawns.push_back(reserve_locked(std::nullopt));
            break;  // leave the rest for the new workers
          }
        }
      }
      // A slot with chunks waiting and no child gets its child back (its keys wait for it).
      if (m_routed != 0)
        for (std::size_t k = 0; k < m_slots.size(); ++k) {
          Slot& slot = m_slots[k];
          if (slot.queue.empty() || slot.worker || slot.spawning || slot.failed) continue;
          if (m_workers.size() + m_spawning >= m_options.max_workers || !can_spawn_locked()) break;
          spawns.push_back(reserve_locked(k));
        }
      publish_locked();
    }
  }

  /// Under the lock: sends `worker` the setups it has not been sent, in order, behind whatever it
  /// holds; true when the caller must flush it.
  bool send_setups_locked(const std::shared_ptr<Worker>& worker) {
    bool flush = false;
    for (std::size_t i = worker->setups_sent; i < m_setup_count; ++i) {
      auto task = std::make_shared<Task>();
      task->chunk = Chunk{m_setups[i], 0, 1};
      std::string frame = m_setup_frames[i];
      const std::uint64_t id = ++m_next_id;
      set_frame_id(frame, id);
      if (worker->inflight.empty()) worker->start_front(task->chunk.job->policy().timeout);
      InFlight f{std::move(task), id, Clock::now()};
      f.setup = true;
      f.bytes = frame.size();
      worker->inflight.push_back(std::move(f));
      flush = worker->queue(frame) || flush;
    }
    worker->setups_sent = m_setup_count;
    return flush;
  }

  /// Fixed and adapt modes: moves the workers toward the target. Below it, draining workers are
  /// kept again and the rest are spawned (returned: the caller spawns them after unlocking);
  /// above it, idle workers retire now and busy ones drain (they finish what they hold, get
  /// nothing new, and retire once idle), so scaling never loses or reruns a chunk. The highest
  /// slots go first, so the slots that stay are the key slots below the target.
  std::vector<std::size_t> rebalance_locked() {
    const std::size_t target = m_sizing.target();
    std::size_t live = m_spawning;
    for (auto& worker : m_workers)
      if (!worker->retiring && !worker->draining) ++live;
    for (auto& worker : m_workers) {
      if (live >= target) break;
      if (worker->draining && !worker->retiring) {
        worker->draining = false;
        ++live;
      }
    }
    for (auto& worker : m_workers)
      if (worker->draining && !worker->retiring && worker->inflight.empty()) retire_locked(*worker);
    for (auto it = m_workers.rbegin(); it != m_workers.rend() && live > target; ++it) {
      Worker& worker = **it;
      if (!worker.retiring && !worker.draining && worker.inflight.empty()) {
        retire_locked(worker);
        --live;
      }
    }
    for (auto it = m_workers.rbegin(); it != m_workers.rend() && live > target; ++it) {
      Worker& worker = **it;
      if (!worker.retiring && !worker.draining) {
        worker.draining = true;
        --live;
      }
    }
    std::vector<std::size_t> spawns;
    if (!can_spawn_locked() || live >= target) return spawns;
    for (std::size_t i = live; i < target && can_spawn_locked(); ++i) spawns.push_back(reserve_locked(std::nullopt));
    return spawns;
  }

  /// Shuts an idle worker's link down: it reads end-of-file and exits with status 0, not a loss.
  void retire_locked(Worker& worker) {
    worker.retiring = true;
    ::shutdown(worker.fd, SHUT_RDWR);
  }

  /// Publishes the target (stats) and concurrency(); on demand, the target is what the queue wants.
  void publish_locked() {
    if (m_sizing.mode() == PoolSizing::Mode::on_demand) {
      std::size_t busy = 0;
      for (auto& worker : m_workers)
        if (!worker->inflight.empty()) ++busy;
      m_sizing.on_demand(busy + startable_locked() + m_routed, m_options.min_workers);
    }
    refresh_keys_locked();
    m_counters.workers_target.store(m_sizing.target(), std::memory_order_relaxed);
    m_concurrency.store(m_sizing.concurrency(), std::memory_order_relaxed);
    m_adapting.store(m_sizing.mode() == PoolSizing::Mode::adapt, std::memory_order_relaxed);
  }

  /// Fails the queued tasks of a stopped call at once (Cancelled), so the call does not wait for
  /// a worker to come by and skip them.
  void withdraw_locked(const Job& job) {
    auto of_job = [&](const std::shared_ptr<Task>& task) { return task->chunk.job.get() == &job; };
    auto withdrawn = m_queue.take_all_if(of_job);
    if (m_routed != 0)
      for (auto& slot : m_slots)
        for (auto& task : slot.queue.take_all_if(of_job)) {
          --m_routed;
          withdrawn.push_back(std::move(task));
        }
    m_counters.queued -= withdrawn.size();
    for (auto& task : withdrawn) finish_locked(*task, std::make_exception_ptr(Cancelled(cancelled_message())));
  }

  /// The watchdog: kills each worker whose running task belongs to a stopped call whose grace
  /// has passed. worker_gone() fails that task (its call is stopped) and does not count the loss.
  void kill_stopped_locked(Clock::time_point now) {
    for (auto& worker : m_workers) {
      if (worker->inflight.empty() || worker->stop_killed) continue;
      const InFlight& running = worker->inflight.front();
      if (running.stopped && now >= running.kill_at) {
        worker->stop_killed = true;
        worker->child.kill(SIGKILL);
      }
    }
  }

  /// A progress frame: the chunk's items done so far, added to its Job as the change since the
  /// last frame (take_back_progress takes it all away again when the chunk ends).
  void note_progress(Worker& worker, const Frame& frame) {
    const double items = decode_progress_payload(frame.payload);
    if (!(items >= 0)) return;  // NaN or negative: Scope::progress clamps, so another build sent it
    Locked lock(*this);
    auto at = std::find_if(worker.inflight.begin(), worker.inflight.end(),
                           [&](const InFlight& f) { return f.id == frame.id; });
    if (at == worker.inflight.end() || at->setup) return;  // its answer came first, or a setup's
    const auto units = Job::progress_units(std::min(items, static_cast<double>(at->task->chunk.size())));
    at->task->chunk.job->add_running_progress(units - at->progress);
    at->progress = units;
  }

  /// The chunk's answer came, or its worker is gone: what it reported leaves the Job's sum.
  static void take_back_progress(InFlight& f) noexcept {
    if (f.progress != 0) f.task->chunk.job->add_running_progress(-f.progress);
    f.progress = 0;
  }

  /// The next queued task whose call still wants it, oldest first among those that may start:
  /// free ones, and (`classed`) those whose amounts fit now. Cancelled ones are skipped here, from a
  /// class's front too, so a failed call does not wait for amounts to finish.
  std::shared_ptr<Task> take_next_locked(bool classed, std::size_t slot) {
    auto may_start = [&](const Resources& resources, const std::shared_ptr<Task>& task) {
      return classed && (abandoned(*task) || m_ledger.fits(resources));
    };
    // Its own slot's keyed and pinned chunks first (one branch while no chunk is keyed or pinned).
    if (m_routed != 0 && slot < m_slots.size())
      while (auto task = m_slots[slot].queue.take_next(may_start)) {
        --m_routed;
        --m_counters.queued;
        if (!abandoned(**task)) return std::move(*task);
        finish_locked(**task, std::make_exception_ptr(ChunkSkipped()));
      }
    while (auto task = m_queue.take_next(may_start)) {
      --m_counters.queued;
      if (!abandoned(**task)) return std::move(*task);
      finish_locked(**task, std::make_exception_ptr(ChunkSkipped()));
    }
    return nullptr;
  }

  static bool abandoned(const Task& task) noexcept { return task.group->finished || task.chunk.job->cancelled(); }

  /// Under the lock: the queued tasks that could start now (free ones, and as many of each class
  /// as fit), what the pool sizes itself on. With no class queued, the queue's size.
  std::size_t startable_locked() const {
    if (!m_queue.has_classes()) return m_queue.size();
    return m_queue.startable([&](const Resources& resources, std::size_t queued) { return m_ledger.room_for(resources, queued); });
  }

  /// A task's answer came or its worker is gone: what it held goes back (the caller pumps).
  void release_locked(InFlight& f) noexcept {
    if (f.holds) m_ledger.release(resources_of(*f.task));
    f.holds = false;
  }

  /// Encodes a task and queues it for the worker; true when the caller must flush the worker.
  enum class Sent { queued, queued_flush, deferred, failed };

  Sent send_task_locked(const std::shared_ptr<Worker>& worker, std::shared_ptr<Task> task) {
    // A task's frame is encoded into the pool's one encoding buffer, or was kept in the task when
    // it had to wait (below); either way it is copied into the worker's outbox, so no task costs
    // a buffer of its own.
    const bool cached = !task->frame.empty();
    if (!cached) {
      m_encoded.clear();
      try {
        const std::size_t at = begin_frame(m_encoded, FrameType::task, 0);
        append_task_payload(task->chunk, m_encoded);
        end_frame(m_encoded, at);
      } catch (...) {
        m_encoded.clear();
        trim_reused_buffer(m_encoded);
        task->chunk.job->cancel();
        finish_locked(*task, std::current_exception());
        return Sent::failed;
      }
    }
    std::string& frame = cached ? task->frame : m_encoded;
    // NOTE: a worker may run a task on its link's reader thread and not read meanwhile; the frames
    // queued behind that task must fit the socket's buffer together, or our send and its result's
    // send could wait for each other. A frame that would take them past max_pipelined_frame waits
    // until the worker has answered (a large one until it is idle: it amortizes the round trip).
    if (!worker->inflight.empty() && queued_behind_running(*worker) + frame.size() > max_pipelined_frame) {
      if (!cached) task->frame.swap(m_encoded);  // kept for when the worker is idle
      queue_locked(std::move(task), true);
      ++m_counters.queued;
      return Sent::deferred;
    }
    // take_next_locked gave it only if its amounts fit: this take succeeds.
    const bool holds = !resources_of(*task).empty() && m_ledger.take(resources_of(*task));
    const std::uint64_t id = ++m_next_id;
    set_frame_id(frame, id);
    const bool must_flush = worker->queue(frame);
    // Before the frame's buffer is emptied below (a deferred task's own, or a large reused one).
    const std::size_t bytes = frame.size();
    if (cached) std::string().swap(task->frame);  // a rerun encodes again (it may be split)
    trim_reused_buffer(m_encoded);
    if (worker->inflight.empty()) worker->start_front(task->chunk.job->policy().timeout);
    InFlight f{std::move(task), id, Clock::now(), holds};
    f.bytes = bytes;
    worker->inflight.push_back(std::move(f));
    ++m_counters.running;
    return must_flush ? Sent::queued_flush : Sent::queued;
  }

  /// The bytes of the task frames `worker` holds behind the one it runs.
  static std::size_t queued_behind_running(const Worker& worker) noexcept {
    std::size_t bytes = 0;
    for (std::size_t i = 1; i < worker.inflight.size(); ++i) bytes += worker.inflight[i].bytes;
    return bytes;
  }

  // ----- workers -----

  static SpawnOptions spawn_options() {
    SpawnOptions options;
    options.arguments = program_arguments();
    if (options.arguments.empty()) options.arguments.push_back("/proc/self/exe");
    options.arguments.push_back(worker_flag);
    // NOTE: a Ctrl-C to the terminal's process group reaches only the parent; the workers follow
    // it through their link (or PR_SET_PDEATHSIG), so a shutdown never sees a wave of deaths.
    options.own_process_group = true;
    return options;
  }

  /// The worker's options with its crash record (process/crash_record.hpp) as its fd 4.
  static SpawnOptions spawn_options(const CrashRecordFile& record) {
    SpawnOptions options = spawn_options();
    if (record.valid()) {
      options.inherited_fd = record.fd();
      options.extra_environment.push_back(std::string(crash_fd_env) + "=" + std::to_string(child_inherited_fd_number));
    }
    return options;
  }

  /// Starts the child of a slot reserve_locked() gave.
  void spawn(std::size_t slot) {
    std::weak_ptr<ProcessPool> weak = weak_from_this();
    // NOTE: shared, as the callback must be copyable; the spawner duplicates the descriptor.
    auto record = std::make_shared<CrashRecordFile>(CrashRecordFile::create());
    pool_spawner().spawn_async(spawn_options(*record), [weak, record, slot](ChildProcess child, std::exception_ptr error) {
      if (auto self = weak.lock()) self->spawned(std::move(child), std::move(error), std::move(*record), slot);
    });
  }

  void spawned(ChildProcess child, std::exception_ptr error, CrashRecordFile record, std::size_t slot) {
    std::shared_ptr<Worker> worker;
    std::vector<Promise<std::vector<std::string>>> waiters;
    std::vector<std::string> ids;
    std::exception_ptr waiters_error;
    {
      Locked lock(*this);
      --m_spawning;
      m_slots[slot].spawning = false;
      if (error || m_stopping) {
        if (m_workers.empty() && m_spawning == 0) {
          waiters = std::exchange(m_target_waiters, {});
          waiters_error = m_stopping ? std::make_exception_ptr(Stopped()) : error;
        }
        if (error && !m_stopping) {
          std::string what = "scale: could not start a worker process";
          try {
            std::rethrow_exception(error);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          log_error(what);
          if (m_workers.empty() && m_spawning == 0) fail_queue_locked(error);
        }
        // A child that arrives once the pool is shutting down never serves: it goes at once.
        if (child.valid()) {
          child.kill(SIGKILL);
          m_unborn.push_back(std::move(child));
        }
        m_cv.notify_all();
      } else {
        worker = std::make_shared<Worker>();
        worker->pid = child.pid();
        worker->fd = child.link_fd();
        worker->slot = slot;
        worker->id = child_id(slot);
        worker->child = std::move(child);
        worker->crash_record = std::move(record);
        m_slots[slot].worker = worker;
        // In slot order: rebalance_locked retires the highest slots first.
        auto at = std::find_if(m_workers.begin(), m_workers.end(), [&](const auto& w) { return w->slot > slot; });
        m_workers.insert(at, worker);
        ++m_readers;
        ++m_counters.workers_spawned;
        ++m_counters.workers_alive;
        if (!m_target_waiters.empty()) {
          waiters = std::exchange(m_target_waiters, {});
          ids = target_ids_locked();
        }
      }
    }
    for (auto& waiter : waiters) {
      if (waiters_error)
        waiter.set_exception(waiters_error);
      else
        waiter.set_value(ids);
    }
    if (worker) std::thread([self = shared_from_this(), worker] { self->read(worker); }).detach();
  }

  /// The result and error frames of one read, handled together (answer_all); reused by its reader.
  struct Answer {
    std::shared_ptr<Task> task;
    const Frame* frame = nullptr;
    bool group_finished = false;
    Clock::duration took{};
    std::exception_ptr error;
  };
  struct Answers {
    std::vector<Frame> frames;
    std::vector<Answer> tasks;
  };

  static bool is_answer(FrameType type) noexcept { return type == FrameType::result || type == FrameType::error; }

  /// A worker's reader thread: hello, results, errors and scope requests, then its exit. The
  /// results and errors one read brings are handled as one batch (answer_all); a frame of another
  /// kind has those before it handled first, so every frame is handled in the order it came.
  void read(std::shared_ptr<Worker> worker) {
    FrameReader reader;
    std::string refused;
    Answers answers;
    for (bool open = true; open;) {
      auto room = reader.prepare();
      ssize_t n = ::read(worker->fd, room.data(), room.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      reader.commit(static_cast<std::size_t>(n));
      std::string bad;
      try {
        for (;;) {
          std::optional<Frame> frame;
          try {
            frame = reader.next();
          } catch (const std::exception& error) {
            bad = error.what();  // the answers before it still count
            break;
          }
          if (!frame) break;
          if (is_answer(frame->type)) {
            answers.frames.push_back(std::move(*frame));
            continue;
          }
          answer_all(*worker, answers);
          if (!handle_frame(*worker, std::move(*frame), refused)) {
            open = false;
            break;
          }
        }
        answer_all(*worker, answers);
      } catch (const std::exception& error) {
        bad = error.what();
      }
      if (!bad.empty()) {
        log_error(std::string("a worker sent a bad frame: ") + bad);
        break;
      }
    }
    worker_gone(worker, refused);
    Locked lock(*this);
    --m_readers;
    m_cv.notify_all();
  }

  /// Results and errors of `worker`'s tasks (its reader's batch, emptied here): one lock takes
  /// them off its in-flight list, their results go back to their calls without the lock, and one
  /// more finishes them and pumps once for the whole batch.
  void answer_all(Worker& worker, Answers& answers) {
    if (answers.frames.empty()) return;
    {
      Locked lock(*this);
      for (const Frame& frame : answers.frames) {
        auto at = std::find_if(worker.inflight.begin(), worker.inflight.end(),
                               [&](const InFlight& f) { return f.id == frame.id; });
        if (at == worker.inflight.end()) continue;
        // A worker runs its chunks in order: one sent behind another started when that one's
        // result left, so its run is timed from then, not from its send.
        const auto now = Clock::now();
        if (at->setup) {
          worker.last_answer = now;
          setup_answered_locked(worker, at, frame);
          continue;
        }
        Answer answer;
        answer.frame = &frame;
        answer.took = now - std::max(at->sent, worker.last_answer);
        worker.last_answer = now;
        take_back_progress(*at);
        release_locked(*at);
        answer.task = std::move(at->task);
        answer.group_finished = answer.task->group->finished;
        const bool was_running = at == worker.inflight.begin();
        worker.inflight.erase(at);
        // A task answered from behind the running one (withdrawn by a stop frame) leaves the
        // running one's timeout as it was.
        if (was_running && !worker.inflight.empty())
          worker.start_front(worker.inflight.front().task->chunk.job->policy().timeout);
        worker.idle_since = now;
        --m_counters.running;
        answers.tasks.push_back(std::move(answer));
      }
    }
    for (Answer& answer : answers.tasks) {
      Task& task = *answer.task;
      const TaskAnswer kind = answer.frame->type == FrameType::error ? TaskAnswer::error : TaskAnswer::results;
      answer.error = hand_back(task.chunk, answer.group_finished, kind, answer.frame->payload);
      // The dispatch sizes the call's next chunks from this (target_chunk_duration()).
      if (!answer.error && !answer.group_finished && kind == TaskAnswer::results) {
        task.chunk.job->record_run(task.chunk.size(), answer.took);
        m_window.finished(std::chrono::duration_cast<std::chrono::microseconds>(answer.took),
                          task.chunk.job->policy().chunk_size, task.chunk.size());
        task.chunk.job->ran_on(task.chunk.begin, task.chunk.end, worker.id);
      }
    }
    Pumped pumped;
    {
      Locked lock(*this);
      for (Answer& answer : answers.tasks) finish_locked(*answer.task, std::move(answer.error));
      pump_locked(pumped);
    }
    answers.tasks.clear();
    answers.frames.clear();
    pumped.run(*this);
  }

  bool handle_frame(Worker& worker, Frame frame, std::string& refused) {
    switch (frame.type) {
      case FrameType::hello: {
        if (frame.payload != m_fingerprint) {
          refused = "refused worker process " + std::to_string(worker.pid) +
                    ": it runs a different build (fingerprint " + frame.payload + ", this process " + m_fingerprint +
                    "); a worker must run the very executable of its manager. Was the program rebuilt or replaced "
                    "while it ran?";
          return false;
        }
        {
          Locked lock(*this);
          worker.ready = true;
          worker.idle_since = Clock::now();
        }
        pump();
        return true;
      }
      case FrameType::progress:
        note_progress(worker, frame);
        return true;
      case FrameType::scope_request: {
        SharedMemory* memory = nullptr;
        SharedEventEmitter* events = nullptr;
        {
          Locked lock(*this);
          if (!worker.inflight.empty()) {
            memory = worker.inflight.front().task->chunk.job->scope_memory();
            events = worker.inflight.front().task->chunk.job->scope_events();
          }
        }
        // NOTE: blocks this reader only; its worker waits for this very answer.
        std::string reply;
        encode_frame(reply, FrameType::scope_reply, frame.id, answer_scope_request(memory, events, frame.payload));
        worker.send(reply);
        return true;
      }
      default:
        return true;
    }
  }

  /// The worker's link closed: it exited, was killed, timed out, retired or was refused.
  void worker_gone(const std::shared_ptr<Worker>& worker, const std::string& refused) {
    ::shutdown(worker->fd, SHUT_RDWR);  // a worker we stopped reading from must see end-of-file
    {
      // A worker still running a task at shutdown may not be reading its link: its work is
      // abandoned anyway, so it goes at once.
      std::lock_guard lock(m_mutex);
      if (m_stopping && !worker->inflight.empty()) worker->child.kill(SIGKILL);
    }
    std::optional<ExitInfo> exit = worker->child.wait_for(std::chrono::seconds(2));
    if (!exit) {
      worker->child.kill(SIGKILL);
      exit = worker->child.wait_for(std::chrono::seconds(2));
    }
    std::string status = exit ? exit->describe() : std::string("its link closed");
    std::optional<CrashReport> capsule = exit ? capsule_of(*worker, *exit) : std::nullopt;
    Locked lock(*this);
    if (worker->timed_out)
      status = "timed out after " + std::to_string(worker->timeout.count()) + " ms, then " + status;
    m_workers.remove(worker);
    Slot& slot = m_slots[worker->slot];
    if (slot.worker == worker) slot.worker = nullptr;
    --m_counters.workers_alive;
    std::deque<InFlight> all = std::move(worker->inflight);
    worker->inflight.clear();
    // Setups it had not answered are dropped (a respawned child runs them all again); a child
    // that dies in one of them, unasked, counts as that setup failing (so a setup that crashes
    // its child cannot respawn children for ever).
    std::deque<InFlight> inflight;
    bool in_setup = false;
    for (auto& f : all) {
      if (f.setup)
        in_setup = true;
      else
        inflight.push_back(std::move(f));
    }
    m_counters.running -= inflight.size();
    for (auto& f : inflight) {
      take_back_progress(f);
      release_locked(f);
    }
    if (in_setup && refused.empty() && !worker->retiring && !m_stopping && !worker->stop_killed)
      setup_failed_locked(*worker, std::make_exception_ptr(Error(
                                       "scale: the worker process " + worker->id + " (pid " + std::to_string(worker->pid) +
                                       ") died while running a setup (on_every_worker): " + status)));
    // Chunks pinned to it (broadcast) cannot run anywhere else.
    if (slot.worker == nullptr && !slot.queue.empty()) {
      auto pinned = slot.queue.take_all_if([](const std::shared_ptr<Task>& task) { return !task->chunk.worker.empty(); });
      m_routed -= pinned.size();
      m_counters.queued -= pinned.size();
      for (auto& task : pinned) finish_locked(*task, std::make_exception_ptr(NoWorkers(gone_child_message(task->chunk.worker))));
    }
    for (auto it = inflight.begin(); it != inflight.end();) {
      if (it->task->chunk.worker.empty()) {
        ++it;
        continue;
      }
      finish_locked(*it->task, std::make_exception_ptr(NoWorkers(gone_child_message(it->task->chunk.worker))));
      it = inflight.erase(it);
    }
    if (!refused.empty()) {
      log_error(refused);
      m_refused = std::make_exception_ptr(BuildMismatch("scale: " + refused));
      for (auto& f : inflight) finish_locked(*f.task, m_refused);
      fail_queue_locked(m_refused);
      m_cv.notify_all();
      return;
    }
    // A worker killed for running a stopped chunk past its grace is no loss; its chunks' call is
    // stopped (so cancelled), and the rerun below fails them rather than running them again.
    if (!worker->retiring && !m_stopping && !worker->stop_killed) ++m_counters.workers_lost;
    // Tasks behind the running one never started: back to the queue, in order, uncharged.
    for (std::size_t i = inflight.size(); i-- > 1;) requeue_locked(std::move(inflight[i].task));
    if (!inflight.empty()) rerun_locked(std::move(inflight.front().task), status, capsule);
    m_cv.notify_all();
    // Outside the lock: a new worker for the rerun (pump takes the lock itself).
    if (!m_stopping && queued_locked()) post_pump();
  }

  /// The capsule of a worker that died of a crash signal while running a task, from its crash
  /// record; read and symbolized without the pool's lock (only this worker's reader calls it, so
  /// the task running cannot change meanwhile).
  std::optional<CrashReport> capsule_of(Worker& worker, const ExitInfo& exit) {
    if (!exit.signaled() || !is_crash_signal(exit.signal)) return std::nullopt;
    std::uint64_t task_id = 0;
    Chunk chunk;
    {
      std::lock_guard lock(m_mutex);
      if (m_stopping || worker.inflight.empty()) return std::nullopt;
      task_id = worker.inflight.front().id;
      chunk = worker.inflight.front().task->chunk;
    }
    return crash_capsule(exit, worker.crash_record, task_id, chunk);
  }

  void post_pump() {
    // NOTE: called with m_mutex held; the watchdog pumps within a few milliseconds.
    m_pump_requested = true;
    m_cv.notify_all();
  }

  /// A task that was sent to a worker that died before starting it.
  void requeue_locked(std::shared_ptr<Task> task) {
    if (m_stopping) return finish_locked(*task, std::make_exception_ptr(Stopped()));
    if (task->group->finished || task->chunk.job->cancelled())
      return finish_locked(*task, std::make_exception_ptr(ChunkSkipped()));
    ++m_counters.retried;
    queue_locked(std::move(task), true);
    ++m_counters.queued;
  }

  /// A task whose worker died while running it: split it, run it again, or give up with WorkerLost.
  void rerun_locked(std::shared_ptr<Task> task, const std::string& status, const std::optional<CrashReport>& capsule) {
    if (m_stopping) return finish_locked(*task, std::make_exception_ptr(Stopped()));
    auto finish = [this](Task& part, std::exception_ptr error) { finish_locked(part, std::move(error)); };
    const std::size_t slot = task->slot;
    auto again = rerun_lost_task(std::move(task), status, m_options.max_retries, m_counters, finish,
                                 capsule ? &*capsule : nullptr);
    for (auto part = again.rbegin(); part != again.rend(); ++part) {
      (*part)->slot = slot;  // a split's second half waits for the same slot (it keeps the key)
      queue_locked(std::move(*part), true);
      ++m_counters.queued;
    }
  }


  /// Completes one part of a group: the group's Promise fails with the first error, or succeeds
  /// once every part has.
  void finish_locked(Task& task, std::exception_ptr error) {
    task.chunk = Chunk{};  // NOTE: the Job may go away once the Promise completes
    m_completions.finish(*task.group, std::move(error), m_counters);
  }

  void fail_queue_locked(std::exception_ptr error) {
    for (auto& task : m_queue.take_all()) {
      --m_counters.queued;
      finish_locked(*task, error);
    }
    if (m_routed == 0) return;
    for (auto& slot : m_slots)
      for (auto& task : slot.queue.take_all()) {
        --m_routed;
        --m_counters.queued;
        finish_locked(*task, error);
      }
  }

  // ----- timeouts, idle workers, min_workers -----

  void watch() {
    std::unique_lock lock(m_mutex);
    while (!m_stopping) {
      // A tick every 20 ms, sooner when an adapt window ends before that.
      auto wake = Clock::now() + std::chrono::milliseconds(20);
      if (const auto deadline = m_sizing.next_deadline()) wake = std::min(wake, *deadline);
      m_cv.wait_until(lock, wake);
      if (m_stopping) break;
      const auto now = Clock::now();
      const bool on_demand = m_sizing.mode() == PoolSizing::Mode::on_demand;
      std::size_t live = 0;
      for (auto& worker : m_workers)
        if (!worker->retiring) ++live;
      kill_stopped_locked(now);
      for (auto& worker : m_workers) {
        if (!worker->inflight.empty() && !worker->timed_out && now >= worker->deadline) {
          worker->timed_out = true;
          worker->child.kill(SIGKILL);
        } else if (on_demand && worker->ready && worker->inflight.empty() && !worker->retiring &&
                   live > m_options.min_workers && now - worker->idle_since >= m_options.idle_timeout &&
                   startable_locked() == 0) {
          --live;
          retire_locked(*worker);
        }
      }
      std::vector<std::size_t> spawns;
      if (on_demand) {
        if (can_spawn_locked() && live + m_spawning < m_options.min_workers)
          for (std::size_t i = live + m_spawning; i < m_options.min_workers && can_spawn_locked(); ++i)
            spawns.push_back(reserve_locked(std::nullopt));
      } else {
        spawns = rebalance_locked();  // replaces lost workers, retires drained ones
      }
      // Adapt: stepped on every tick as well as on the calls' reports, so a window that ends
      // moves the target even when nothing is reported (next_deadline() passed), and so does a
      // backlog that vanished unreported (a call that failed stops reporting).
      const bool step_now = m_sizing.mode() == PoolSizing::Mode::adapt;
      publish_locked();
      const bool pump_now = m_pump_requested || queued_locked();
      m_pump_requested = false;
      lock.unlock();
      for (std::size_t slot : spawns) spawn(slot);
      if (step_now) reevaluate();
      if (pump_now) pump();
      lock.lock();
    }
  }

  static ProcessPoolOptions normalized(ProcessPoolOptions options) {
    if (options.max_workers == 0) options.max_workers = std::max(1u, std::thread::hardware_concurrency());
    options.min_workers = std::min(options.min_workers, options.max_workers);
    return options;
  }

  ProcessPoolOptions m_options;
  std::string m_fingerprint;
  CallsHooks m_hooks;
  PoolSizing m_sizing;                     // guarded by m_mutex
  std::atomic<std::size_t> m_concurrency;  // m_sizing.concurrency(), read without the lock
  std::atomic<bool> m_adapting{false};     // m_sizing.mode() == adapt, read without the lock
  std::atomic<bool> m_pump_posted{false};  // a pump_after_submit() is queued on the loop
  mutable std::mutex m_mutex;
  std::condition_variable m_cv;
  ResourceLedger m_ledger;  // guarded by m_mutex; its provides() are fixed at construction
  RoutedQueue<std::shared_ptr<Task>> m_queue;
  std::list<std::shared_ptr<Worker>> m_workers;
  std::size_t m_spawning = 0;
  std::vector<ChildProcess> m_unborn;  // spawned during shutdown() and killed; it waits for them
  std::size_t m_readers = 0;
  // NOTE: a deque, so a reference to a Slot survives slots added meanwhile.
  std::deque<Slot> m_slots;
  std::size_t m_routed = 0;               // tasks in the slots' queues
  std::size_t m_key_span = 0;             // the concurrency() the key slots were computed for
  bool m_keys_dirty = true;               // a slot failed since
  std::vector<std::size_t> m_key_slots;   // the key slots, for rendezvous_pick over m_key_ids
  std::vector<std::string> m_key_ids;
  std::vector<std::shared_ptr<Job>> m_setups;  // on_every_worker, in order
  std::vector<std::string> m_setup_frames;     // each one's task frame (its id set per send)
  std::size_t m_setup_count = 0;               // m_setups.size()
  std::exception_ptr m_setup_error;            // the last setup's error
  std::size_t m_setup_failures = 0;            // children whose setups failed since the last retry
  bool m_setups_exhausted = false;             // as many as max_workers: no more spawns
  std::vector<Promise<std::vector<std::string>>> m_target_waiters;  // broadcast_targets() with no child
  std::uint64_t m_next_id = 0;
  std::string m_encoded;  // the task frame being encoded (send_task_locked), its capacity kept
  bool m_stopping = false;
  bool m_pump_requested = false;
  std::exception_ptr m_refused;
  Completions m_completions;  // completed after unlocking
  TaskCounters m_counters;
  ShortChunkWindow m_window;  // of the chunks whose results came (core/short_chunks.hpp)
  std::thread m_watchdog;
};

}  // namespace scale::detail

namespace scale {

ProcessPoolManager::ProcessPoolManager(ProcessPoolOptions options)
    : m_pool(std::make_shared<detail::ProcessPool>(
          options, detail::CallsHooks{[this] { return backlog(); }, [this] { concurrency_changed(); }})) {
  // NOTE: the hooks use this manager; the pool calls them only until shutdown() returns, which
  // the destructor waits for before the manager goes.
  m_pool->start();
}

ProcessPoolManager::~ProcessPoolManager() {
  stop_reporting();
  m_pool->shutdown();
}

Future<void> ProcessPoolManager::submit(detail::Chunk chunk) { return m_pool->submit(std::move(chunk)); }
void ProcessPoolManager::stop_call(const std::shared_ptr<detail::Job>& job) { m_pool->stop(job); }
std::size_t ProcessPoolManager::concurrency() const noexcept { return m_pool->concurrency(); }
std::size_t ProcessPoolManager::chunks_in_flight(std::size_t workers) const noexcept {
  return m_pool->chunks_in_flight(workers);
}
void ProcessPoolManager::resize(std::size_t n) { m_pool->resize(n); }
void ProcessPoolManager::adapt(ScalingPolicy policy) { m_pool->adapt(policy); }
void ProcessPoolManager::backlog_changed() { m_pool->reevaluate(); }
ManagerStats ProcessPoolManager::stats() const { return m_pool->stats(); }
std::vector<pid_t> ProcessPoolManager::worker_pids() const { return m_pool->pids(); }
ProcessPoolManager::Holdings ProcessPoolManager::holdings() const { return m_pool->holdings(); }
std::vector<detail::ReportedWorker> ProcessPoolManager::report_workers() const { return m_pool->reported_workers(); }
Future<std::vector<std::string>> ProcessPoolManager::broadcast_targets() { return m_pool->targets(); }
void ProcessPoolManager::add_setup(std::shared_ptr<detail::Job> setup) { m_pool->add_setup(std::move(setup)); }

}  // namespace scale


