#pragma once
/// \file scale::ScalabilityManager: the one interface every place that runs work implements.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <scale/detail/job.hpp>
#include <scale/detail/reported_worker.hpp>
#include <scale/future.hpp>
#include <scale/progress.hpp>

namespace scale {

class SharedMemory;
class SharedEventEmitter;

namespace detail {

class ManagerReport;
class CallRecord;

/// How a call ended, as a manager's report shows it (src/core/manager_report.hpp).
enum class CallEnd { done, failed, cancelled };

/// A running algorithm call as its manager sees it (the dispatch in dispatch.hpp implements it):
/// how much it still has to run, and a way to tell it that it may start more chunks.
class CallDemand {
 public:
  virtual ~CallDemand() = default;
  /// Chunks the call still has to run: its unfinished items in chunks of its current size.
  virtual std::size_t backlog() const noexcept = 0;
  /// The manager's concurrency changed; the call starts more chunks if that allows. Any thread.
  virtual void wake() noexcept = 0;
  /// On the loop: how far the call has got now, as on_progress would be told (for a report).
  virtual Progress progress_now() const = 0;

  /// On the loop: true when a manager's report follows this call (report_to), which then wants
  /// to be told how it ended. False on every call of a manager that does not report.
  bool reported() const noexcept { return m_record != nullptr; }
  /// On the loop, once, when reported(): how the call ended and its last progress, so the report
  /// shows it once more in its final state. Defined in src/core/manager_report.cpp.
  void report_end(CallEnd end, const Progress& last) noexcept;

 private:
  friend class ManagerReport;
  std::shared_ptr<CallRecord> m_record;  // loop thread only; set by the report
};

/// The report of a manager, for ScalabilityManager's inline attach_call (manager_report.cpp).
void report_call(ManagerReport& report, const std::shared_ptr<CallDemand>& call);

}  // namespace detail

/// Runs chunks of an algorithm's items: on the loop (InlineManager), on threads
/// (ThreadPoolManager), in child processes or on other servers. The Iterator algorithms are
/// written once over this interface.
class ScalabilityManager {
 public:
  ScalabilityManager() = default;
  ScalabilityManager(const ScalabilityManager&) = delete;
  ScalabilityManager& operator=(const ScalabilityManager&) = delete;
  /// Ends a report still running (see stop_reporting: a derived manager calls that first).
  virtual ~ScalabilityManager() {
    if (m_report) stop_reporting();
  }

  /// Runs items [chunk.begin, chunk.end) of chunk.job; callable from any thread. The Future
  /// completes (resuming its awaiter on the loop) once every item of the chunk has run and its
  /// result is written into the job, or fails with the exception an item threw (type preserved
  /// on the thread tiers). A chunk of an already-cancelled job fails with detail::ChunkSkipped
  /// without running. Implementations run chunks through detail::run_chunk_blocking or
  /// detail::run_chunk_on_loop, so the cancel rules are the same everywhere; a manager that runs
  /// them elsewhere records their time with Job::record_run.
  virtual Future<void> submit(detail::Chunk chunk) = 0;

  /// How many chunks this manager runs at once now (threads, worker processes, the threads of
  /// every joined worker). The algorithms keep chunks_in_flight(concurrency()) chunks submitted,
  /// and re-read it as chunks complete and whenever the manager reports a change
  /// (concurrency_changed).
  virtual std::size_t concurrency() const noexcept = 0;

  /// How many chunks a call keeps submitted while `workers` run at once: twice as many by
  /// default, so each worker has the next one queued while it runs one. A manager whose chunks
  /// wait in a remote queue may keep more there while they are short (ClusterManager does).
  virtual std::size_t chunks_in_flight(std::size_t workers) const noexcept { return 2 * workers; }

  /// How long one automatically sized chunk should run (RunOptions::chunk_size 0): long enough to
  /// amortize what a chunk costs here, short enough to spread the work over every worker. The
  /// algorithms measure the time per item and cut chunks to this, smaller as a call nears its end.
  virtual std::chrono::microseconds target_chunk_duration() const noexcept { return std::chrono::milliseconds(1); }

  /// Workers and tasks (chunks) as of now.
  virtual ManagerStats stats() const = 0;

  /// Runs `fn(value)` (or `fn(value, scope)`, the scope reaching `memory` and `events`) once on
  /// every live worker of this manager: one per thread of a thread pool, one on InlineManager, one
  /// per live child of a process pool (which starts one when none is alive), one per live
  /// compatible cluster worker. Completes with one WorkerReply per worker, each with its value or
  /// the exception it threw; fails with scale::NoWorkers when there is no worker at all. The
  /// function must be shippable on the process and cluster tiers, as for map. Defined in
  /// scale/broadcast.hpp (included by scale/scale.hpp).
  template <class F, class V>
  auto broadcast(F fn, V value, SharedMemory* memory = nullptr, SharedEventEmitter* events = nullptr);

  /// Registers `fn(scope)` to run on each worker before its first chunk from this manager, late
  /// joiners and respawned children included: a worker takes no chunk of this manager until its
  /// setups have run there, in the order registered. A setup that throws keeps that worker from
  /// this manager's chunks (ManagerStats::setups_failed counts it), and a call with no worker
  /// left fails with the setup's exception. Register before the calls that need it. Defined in
  /// scale/broadcast.hpp.
  template <class F>
  void on_every_worker(F fn, SharedMemory* memory = nullptr, SharedEventEmitter* events = nullptr);

  /// Publishes this manager to `memory` as `name` (1-128 characters of A-Z a-z 0-9 . _ -, else
  /// std::invalid_argument): the event `_scale/managers` with its kind, stats, workers and each
  /// running call's progress when something changed (at most every 250 ms, at least every 2 s),
  /// and the same payload in the key `_scale/managers/<name>` (at most every 2 s); destroying the
  /// manager erases the key and emits `{"name", "ended": true, "time_ms"}`. The events go through
  /// `events` when given, else through a SharedEventEmitter on memory.url() (http:// or redis://);
  /// an in-process memory without `events` gets the snapshots only. A reporting manager also
  /// obeys drain orders written to `_scale/orders/<name>/<order id>` (a ClusterManager drains the
  /// worker; the others answer with an error event). The report runs on the loop; a manager that
  /// never calls this pays nothing for it. Call it once per manager (again: std::logic_error).
  /// See docs/dashboard.md ("Managers that report").
  void report_to(SharedMemory& memory, std::string name, SharedEventEmitter* events = nullptr);

  // ----- for the report (src/core/manager_report.hpp), on the loop -----

  /// The payload's "kind": "inline", "thread_pool", "process_pool", "cluster"; "custom" for a
  /// manager of the user's own.
  virtual std::string_view report_kind() const noexcept { return "custom"; }
  /// The workers as the report lists them; none by default.
  virtual std::vector<detail::ReportedWorker> report_workers() const { return {}; }
  /// True when drain orders drain workers here (the payload's "orders"): a ClusterManager.
  virtual bool obeys_orders() const noexcept { return false; }
  /// Drains worker `worker_id` for an order; by default fails with scale::Error (nothing to drain).
  virtual Future<void> drain_for_order(std::string worker_id);

  // ----- for broadcast and on_every_worker (scale/broadcast.hpp) -----

  /// The ids of the workers alive now (WorkerResult::worker's form), for broadcast: each gets one
  /// chunk pinned to it (Chunk::worker). A process pool with no child alive starts one first.
  virtual Future<std::vector<std::string>> broadcast_targets() = 0;
  /// Adds a setup: a one-item Job that each worker runs (Job::run(0, 1), or as a task on the
  /// remote tiers) before it takes its first chunk from this manager.
  virtual void add_setup(std::shared_ptr<detail::Job> setup) = 0;

  /// What the running calls still have to run, in chunks of their current size (what `adapt`
  /// scales on).
  std::size_t backlog() const {
    std::lock_guard lock(m_calls_mutex);
    std::size_t total = 0;
    for (const auto& weak : m_calls)
      if (auto call = weak.lock()) total += call->backlog();
    return total;
  }

  // ----- for the algorithms (detail/dispatch.hpp) -----

  /// A call starts: the manager counts its backlog and wakes it when concurrency changes. The
  /// manager holds it weakly: a call that has ended drops out by itself.
  void attach_call(const std::shared_ptr<detail::CallDemand>& call) {
    std::shared_ptr<detail::ManagerReport> report;
    {
      std::lock_guard lock(m_calls_mutex);
      std::erase_if(m_calls, [](const auto& weak) { return weak.expired(); });
      m_calls.push_back(call);
      report = m_report;
    }
    if (report) detail::report_call(*report, call);
    backlog_changed();
  }

  /// The running calls (for the report, on the loop).
  std::vector<std::shared_ptr<detail::CallDemand>> running_calls() const {
    std::vector<std::shared_ptr<detail::CallDemand>> calls;
    std::lock_guard lock(m_calls_mutex);
    for (const auto& weak : m_calls)
      if (auto call = weak.lock()) calls.push_back(std::move(call));
    return calls;
  }
  /// A call was stopped (RunOptions::stop, Ctrl-C), on the loop; its Job's stop flag is already
  /// set, so chunks not yet started are skipped and running functions see Scope::stop_requested().
  /// A manager that holds chunks elsewhere withdraws the queued ones, tells the workers running
  /// the others, and after job->policy().grace kills and replaces a worker still running one (not
  /// counted as lost). Every chunk it withdraws or kills fails (any error: the call fails with
  /// Cancelled). The thread tiers need nothing more: they cannot stop a running function.
  virtual void stop_call(const std::shared_ptr<detail::Job>& job) { (void)job; }

  /// A call's backlog changed (it cut or finished chunks). Managers that scale on it override
  /// this; it must return at once (any thread, usually the loop).
  virtual void backlog_changed() {}

 protected:
  /// Stops the report (report_to) before anything it reads is torn down: each manager calls it
  /// first in its own destructor (a derived class's members are gone before this base's
  /// destructor runs). Once it returns, the report no longer touches this manager; the key is
  /// erased and the "ended" event sent (waited for up to 2 s off the loop, sent without waiting
  /// on it). Any thread; does nothing when the manager does not report.
  void stop_reporting() noexcept;

  /// Tells every running call that concurrency() changed, so each starts more chunks now
  /// rather than when its next chunk completes. Any thread.
  void concurrency_changed() {
    for (const auto& call : running_calls()) call->wake();
  }

 private:
  mutable std::mutex m_calls_mutex;
  std::vector<std::weak_ptr<detail::CallDemand>> m_calls;
  std::shared_ptr<detail::ManagerReport> m_report;  // under m_calls_mutex; null unless report_to
};

}  // namespace scale
