#pragma once
// What a ScalabilityManager runs: a Job (one algorithm call over shared items) cut into Chunks.
//
// The algorithms in iterator.hpp build a Job, cut [0, size) into chunks and hand each Chunk to
// the manager, which runs it wherever it runs work and completes the chunk's Future. A manager
// never knows which algorithm it serves: the Job writes its own results (by item index into a
// buffer the algorithm pre-sized), so a chunk's Future carries no value on the thread tiers.
//
// Three ways to run a chunk, one per kind of place:
//   - run(begin, end): blocking, on any thread but the loop. A tight loop over the items for a
//     plain function (no allocation, lock or syscall per item); a Future-returning function is
//     waited on item by item with Future::get().
//   - run_async(begin, end): a coroutine for the loop thread (InlineManager): Future-returning
//     functions are co_awaited; plain ones run straight through.
//   - the remote path (process and cluster managers): task_name() names the Job's type in the
//     TaskRegistry (task_registry.hpp), encode_extra() and encode_items(begin, end) give the bytes
//     of a task payload (its layout is src/remote/task_payload.hpp's alone) and
//     accept_results(begin, end, bytes) writes a worker's decoded results into the same buffer. A
//     worker runs the same per-item kernel (run()) on a Job it builds from the decoded items.
//     remote_problem() says, before anything is sent, why a Job cannot leave the process (a
//     lambda with captures, a type without to_json/from_json), so the call fails at once.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <string>
#include <string_view>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <scale/detail/chunk_control.hpp>
#include <scale/detail/key_groups.hpp>
#include <scale/detail/requirement.hpp>
#include <scale/detail/nesting.hpp>
#include <scale/error.hpp>
#include <scale/future.hpp>

namespace scale {

class SharedMemory;
class SharedEventEmitter;

/// What a manager reports about its workers and tasks. A task is one chunk of items.
struct ManagerStats {
  std::size_t workers_alive = 0;    ///< threads or processes able to run tasks now
  std::size_t workers_spawned = 0;  ///< started since the manager was created
  std::size_t workers_lost = 0;     ///< died while the manager needed them
  std::size_t tasks_queued = 0;     ///< submitted, not started
  std::size_t tasks_running = 0;    ///< started, not finished
  std::size_t tasks_done = 0;       ///< finished without error
  std::size_t tasks_failed = 0;     ///< finished with an error (the function threw, or Stopped)
  std::size_t tasks_retried = 0;    ///< run again after their worker was lost
  /// Workers kept from this manager's chunks because a setup (on_every_worker) threw there.
  std::size_t setups_failed = 0;
  std::size_t workers_refused = 0;  ///< workers of another build seen (never given tasks; cluster only)
  std::size_t workers_target = 0;   ///< the count the manager is moving to (resize, adapt; cluster: desired_workers())
};

/// Every field by its C++ name ({"workers_alive": 2, ...}), as a manager's report shows it.
inline void to_json(nlohmann::json& out, const ManagerStats& stats) {
  out = nlohmann::json{{"workers_alive", stats.workers_alive}, {"workers_spawned", stats.workers_spawned},
                       {"workers_lost", stats.workers_lost},   {"tasks_queued", stats.tasks_queued},
                       {"tasks_running", stats.tasks_running}, {"tasks_done", stats.tasks_done},
                       {"tasks_failed", stats.tasks_failed},   {"tasks_retried", stats.tasks_retried},
                       {"setups_failed", stats.setups_failed}, {"workers_refused", stats.workers_refused},
                       {"workers_target", stats.workers_target}};
}

namespace detail {

/// A chunk that was not started because its call had already failed. The algorithms swallow it
/// (the call fails with the error that caused the cancel); users never see it.
class ChunkSkipped : public Error {
 public:
  ChunkSkipped() : Error("scale: chunk skipped because an earlier chunk of the same call failed") {}
};

/// Per-call settings a manager may need when it runs the call's chunks.
struct TaskPolicy {
  std::optional<unsigned> max_retries;   ///< unset: the manager's default
  std::chrono::milliseconds timeout{0};  ///< zero: none
  std::chrono::milliseconds grace{2000};  ///< after a stop, before a worker still running is killed
  Requirement requirement{};              ///< what each running chunk holds and must match
  std::size_t chunk_size = 0;             ///< RunOptions::chunk_size: the call's own, or 0 (automatic)
};

/// The message of the scale::Cancelled a stopped call fails with.
inline const char* cancelled_message() noexcept {
  return "scale::Cancelled: the call was stopped (its RunOptions::stop token, or Ctrl-C / SIGTERM to the "
         "application); items that had not run were withdrawn";
}

/// One algorithm call over a shared, immutable sequence of items. Shared (std::shared_ptr)
/// between the algorithm and every chunk in flight, so it outlives whichever finishes last.
class Job {
 public:
  Job(std::size_t size, TaskPolicy policy)
      : m_size(size), m_policy(std::move(policy)), m_made_in(current_nesting_frame()) {}
  virtual ~Job() = default;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  /// Number of items; chunks cover [0, size()).
  std::size_t size() const noexcept { return m_size; }
  const TaskPolicy& policy() const noexcept { return m_policy; }

  /// Once set, chunks that have not started are skipped (ChunkSkipped). Running ones finish.
  bool cancelled() const noexcept { return m_cancelled.load(std::memory_order_acquire); }
  void cancel() noexcept { m_cancelled.store(true, std::memory_order_release); }

  /// Once set (a stop request), chunks that have not started are skipped, running functions see
  /// Scope::stop_requested(), and a chunk that checks between items stops (scale::Cancelled).
  bool stop_requested() const noexcept { return m_stop.load(std::memory_order_acquire); }
  void request_stop() noexcept {
    m_stop.store(true, std::memory_order_release);
    cancel();
  }
  /// The flag itself, for a ChunkControl.
  const std::atomic<bool>* stop_flag() const noexcept { return &m_stop; }

  /// What running chunks have reported through Scope::progress, in items (fractions included):
  /// the chunks running here (their controls, read now) plus what remote chunks reported
  /// (add_running_progress: a manager adds a remote chunk's reports as deltas and takes them away
  /// again exactly when the chunk ends, is lost or is withdrawn).
  double running_progress() const noexcept {
    double items = static_cast<double>(m_running_progress.load(std::memory_order_relaxed)) / progress_unit;
    std::lock_guard lock(m_controls_mutex);
    for (const ChunkControl* control : m_running_controls) items += control->latest_progress();
    return items;
  }
  /// Kept in fixed point (progress_units), so what a chunk adds it takes away exactly.
  static std::int64_t progress_units(double items) noexcept {
    return static_cast<std::int64_t>(items * progress_unit + 0.5);
  }
  void add_running_progress(std::int64_t units) noexcept {
    m_running_progress.fetch_add(units, std::memory_order_relaxed);
  }
  /// A chunk running in this process starts or ends (JobChunkControl): one lock per chunk.
  void attach_control(const ChunkControl* control) {
    std::lock_guard lock(m_controls_mutex);
    m_running_controls.push_back(control);
  }
  void detach_control(const ChunkControl* control) noexcept {
    std::lock_guard lock(m_controls_mutex);
    std::erase(m_running_controls, control);
  }
  /// True the first time it is called: a bad Scope::progress value is logged once per call.
  bool first_bad_progress() noexcept { return !m_bad_progress_seen.exchange(true, std::memory_order_relaxed); }

  /// Item `index` as JSON text, cut at 4 KiB (a crash capsule's `item`); empty when unknown.
  virtual std::string item_text(std::size_t index) const {
    (void)index;
    return {};
  }

  /// Records that `items` items took `took` to run (one chunk, measured where it ran, or by a
  /// remote manager from send to result). The dispatch sizes later chunks from it.
  void record_run(std::size_t items, std::chrono::nanoseconds took) noexcept {
    m_timed_ns.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(took.count(), 1)), std::memory_order_relaxed);
    m_timed_items.fetch_add(items, std::memory_order_relaxed);
  }
  /// Items and time recorded so far (record_run); zero items when none was.
  std::size_t timed_items() const noexcept { return m_timed_items.load(std::memory_order_relaxed); }
  std::chrono::nanoseconds timed_duration() const noexcept {
    return std::chrono::nanoseconds(static_cast<std::int64_t>(m_timed_ns.load(std::memory_order_relaxed)));
  }

  /// A keyed call's groups (Iterator::keyed_by): its items are in grouped order, and the dispatch
  /// cuts no chunk across two keys. Null for a call without keys.
  const std::shared_ptr<const KeyGroups>& key_groups() const noexcept { return m_key_groups; }
  void set_key_groups(std::shared_ptr<const KeyGroups> groups) noexcept { m_key_groups = std::move(groups); }

  /// Items [begin, end) ran on the worker `worker` (WorkerResult::worker's ids). Managers call it
  /// before they complete a chunk's Future; only map_with_workers keeps it.
  virtual void ran_on(std::size_t begin, std::size_t end, std::string_view worker) {
    (void)begin;
    (void)end;
    (void)worker;
  }

  /// The pool chunk this Job was made in (a nested call), or null (nesting.hpp).
  const std::shared_ptr<const NestingFrame>& made_in() const noexcept { return m_made_in; }

  /// True when the user function returns a Future (its continuations resume on the loop).
  virtual bool is_async() const noexcept = 0;

  /// Runs items [begin, end) on this thread and returns when they are done; throws what the
  /// function threw. Not on the loop thread when is_async() (it would wait for itself).
  virtual void run(std::size_t begin, std::size_t end) = 0;

  /// Runs items [begin, end) as a coroutine, for the loop thread. The caller keeps the Job alive
  /// until the Future completes (a Chunk owns it).
  virtual Future<void> run_async(std::size_t begin, std::size_t end) = 0;

  // ----- the remote path (process and cluster managers) -----

  /// Empty when the Job can run in another process of this executable; otherwise what the user
  /// must change, as the message of the scale::Error the call fails with.
  virtual std::string remote_problem() const { return "scale: this job cannot run in another process"; }
  /// The Job's name in the TaskRegistry (the same in every process of this executable).
  virtual const std::string& task_name() const;
  /// Appends the bytes every chunk of the call carries besides its items (reduce's init); none by
  /// default. The task payload records how many there are.
  virtual void encode_extra(std::string& out) const { (void)out; }
  /// Appends items [begin, end), encoded for a worker.
  virtual void encode_items(std::size_t begin, std::size_t end, std::string& out) const;
  /// Writes a worker's encoded results for items [begin, end) into the Job; throws scale::Error
  /// when they do not decode.
  virtual void accept_results(std::size_t begin, std::size_t end, std::string_view bytes);
  /// False when a chunk cannot be cut after it started (reduce keeps one partial per chunk).
  virtual bool splittable() const noexcept { return true; }
  /// The state a worker's Scope reaches (Iterator::use_scope), or null.
  virtual SharedMemory* scope_memory() const noexcept { return nullptr; }
  virtual SharedEventEmitter* scope_events() const noexcept { return nullptr; }

 private:
  std::size_t m_size;
  TaskPolicy m_policy;
  std::shared_ptr<const NestingFrame> m_made_in;
  std::shared_ptr<const KeyGroups> m_key_groups;
  static constexpr double progress_unit = 1'000'000;  // fixed point: millionths of an item
  std::atomic<bool> m_cancelled{false};
  std::atomic<bool> m_stop{false};
  std::atomic<bool> m_bad_progress_seen{false};
  std::atomic<std::int64_t> m_running_progress{0};
  mutable std::mutex m_controls_mutex;
  std::vector<const ChunkControl*> m_running_controls;
  std::atomic<std::uint64_t> m_timed_ns{0};
  std::atomic<std::size_t> m_timed_items{0};
};

inline const std::string& Job::task_name() const {
  static const std::string none;
  return none;
}
inline void Job::encode_items(std::size_t, std::size_t, std::string&) const { throw NotShippable(remote_problem()); }
inline void Job::accept_results(std::size_t, std::size_t, std::string_view) { throw NotShippable(remote_problem()); }

/// Items [begin, end) of a job: what the algorithms hand a manager.
struct Chunk {
  std::shared_ptr<Job> job;
  std::size_t begin = 0;
  std::size_t end = 0;
  /// The key all its items share (a keyed call: the manager sends it to the worker that the key
  /// hashes to, rendezvous over the workers that meet the call), or empty. Points into the Job's
  /// key_groups(), which the Job keeps alive.
  std::string_view key{};
  /// The one worker that must run it (broadcast, setups), or empty for any. A chunk whose worker
  /// is gone fails with scale::NoWorkers.
  std::string worker{};
  std::size_t size() const noexcept { return end - begin; }
  bool keyed() const noexcept { return job->key_groups() != nullptr; }
};

/// The ChunkControl of a chunk that runs in this process (the thread tiers): the Job's stop flag;
/// the Job reads its progress while it runs (running_progress).
class JobChunkControl final : public ChunkControl {
 public:
  explicit JobChunkControl(Job& job) : ChunkControl(job.stop_flag()), m_job(job) { m_job.attach_control(this); }
  ~JobChunkControl() { m_job.detach_control(this); }
  bool first_bad_progress() noexcept override { return m_job.first_bad_progress(); }

 private:
  Job& m_job;
};

/// Runs a chunk on a thread that may block (a pool thread, a worker): skips it when the call is
/// cancelled, and cancels the call when the chunk throws (so no further chunk starts) before
/// rethrowing. Every blocking manager runs chunks through this.
inline void run_chunk_blocking(const Chunk& chunk) {
  if (chunk.job->cancelled()) throw ChunkSkipped();
  try {
    const auto start = std::chrono::steady_clock::now();
    chunk.job->run(chunk.begin, chunk.end);
    chunk.job->record_run(chunk.size(), std::chrono::steady_clock::now() - start);
  } catch (...) {
    chunk.job->cancel();
    throw;
  }
}

/// The same for the loop thread: a plain function runs straight through, a Future-returning one
/// is co_awaited item by item.
inline Future<void> run_chunk_on_loop(Chunk chunk) {
  if (chunk.job->cancelled()) throw ChunkSkipped();
  std::exception_ptr error;
  try {
    const auto start = std::chrono::steady_clock::now();
    if (chunk.job->is_async()) {
      Future<void> done = chunk.job->run_async(chunk.begin, chunk.end);
      co_await std::move(done);
    } else {
      chunk.job->run(chunk.begin, chunk.end);
    }
    chunk.job->record_run(chunk.size(), std::chrono::steady_clock::now() - start);
  } catch (...) {
    error = std::current_exception();
  }
  if (error) {
    chunk.job->cancel();
    std::rethrow_exception(error);
  }
}

/// Counters behind ManagerStats, safe to bump from any thread.
struct TaskCounters {
  std::atomic<std::size_t> workers_alive{0}, workers_spawned{0}, workers_lost{0};
  std::atomic<std::size_t> queued{0}, running{0}, done{0}, failed{0}, retried{0};
  std::atomic<std::size_t> workers_refused{0}, workers_target{0}, setups_failed{0};

  ManagerStats snapshot() const noexcept {
    constexpr auto r = std::memory_order_relaxed;
    return ManagerStats{workers_alive.load(r), workers_spawned.load(r), workers_lost.load(r),
                        queued.load(r),        running.load(r),         done.load(r),
                        failed.load(r),        retried.load(r),         setups_failed.load(r),
                        workers_refused.load(r), workers_target.load(r)};
  }
};

}  // namespace detail
}  // namespace scale
