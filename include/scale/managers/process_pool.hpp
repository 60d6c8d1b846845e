#pragma once
/// \file scale::ProcessPoolManager: runs chunks in child processes of this executable, spawned on
/// demand, to a fixed count (resize) or to follow the backlog (adapt).

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include <scale/detail/job.hpp>
#include <scale/future.hpp>
#include <scale/provides.hpp>
#include <scale/scalability_manager.hpp>
#include <scale/scaling_policy.hpp>

namespace scale {

namespace detail {
class ProcessPool;
}

/// How a ProcessPoolManager grows, shrinks and retries; meant for designated initialisers:
/// `scale::ProcessPoolManager manager({.max_workers = 4, .idle_timeout = std::chrono::seconds(2)});`
struct ProcessPoolOptions {
  /// The most worker processes at once; 0 means one per hardware thread (at least one). Caps
  /// resize() and adapt() too.
  std::size_t max_workers = 0;
  /// Workers kept running while idle (started with the manager); until resize() or adapt().
  std::size_t min_workers = 0;
  /// An idle worker above min_workers exits after this long without a task; until resize() or
  /// adapt() (a fixed count keeps its workers; adapt uses its scale_down_after window).
  std::chrono::milliseconds idle_timeout{10'000};
  /// How often a chunk runs again after its worker died (RunOptions::max_retries overrides it per call).
  unsigned max_retries = 3;
  /// Amounts and labels the pool offers as a whole, for calls with RunOptions::resources or
  /// ::labels (Provides: a number is an amount, anything else a label). gpu=2 means the machine's
  /// two GPUs: at most two tasks of calls needing gpu=1 run at once, whatever max_workers is.
  /// Empty: none, so a call that needs any fails with scale::Unsatisfiable. Checked as
  /// parse_provides checks its text (std::invalid_argument from the constructor).
  Provides provides{};
};

/// Runs chunks in worker processes: children started from /proc/self/exe with this program's
/// arguments plus a worker flag, whose `scale::Runtime(argc, argv)` serves tasks instead of
/// returning. Workers are spawned only when chunks are queued, up to max_workers, reused while
/// busy, and exit after idle_timeout. Items and results travel over a socketpair (raw bytes for
/// trivially copyable types, MessagePack otherwise); the function must capture nothing (see
/// docs/process-pool.md). A worker that dies mid-chunk has the chunk rerun (split in halves, so a
/// chunk that keeps killing workers ends up naming its one bad item in scale::WorkerLost); an
/// exception in the function arrives as scale::RemoteError. resize() and adapt() change the
/// worker count while maps run. Destroying the manager closes every link (the workers exit) and
/// fails chunks still queued or running with scale::Stopped. Inside one of its own worker
/// processes a ProcessPoolManager spawns nothing: a map on it fails at once with scale::Error
/// (run nested maps on a ThreadPoolManager there).
///
/// Routing: a task of a call with RunOptions::resources holds them while a worker runs it; the
/// pool never runs tasks that together hold more than options.provides offers, such a task waits
/// in a queue of its own class (tasks behind it go ahead), and nothing is pipelined behind it on
/// its worker. A call the pool can never meet fails at once with scale::Unsatisfiable, before any
/// of its tasks is sent.
///
/// Worker identity: each child has a slot k, its id "child-<k>" (map_with_workers, broadcast); a
/// child that dies or retires gives its slot to its replacement. keyed_by sends a key's chunks to
/// the slot rendezvous hashing picks among the slots below concurrency(), so a key stays on its
/// child while it lives, and a killed child's keys wait for the child that takes its slot back
/// (only they move, to a new process). A chunk pinned to a child that is gone fails with
/// scale::NoWorkers. See docs/routing.md.
class ProcessPoolManager final : public ScalabilityManager {
 public:
  /// What the live children hold at one instant (holdings()).
  struct Holdings {
    struct Child {
      pid_t pid = 0;
      std::size_t tasks = 0;         ///< sent to it and not answered; the first is running
      std::size_t bytes_behind = 0;  ///< of the task frames queued behind the running one
    };
    std::size_t tasks_done = 0;  ///< ManagerStats::tasks_done at the same instant
    std::vector<Child> children; ///< in slot order
  };

  explicit ProcessPoolManager(ProcessPoolOptions options = {});
  ~ProcessPoolManager() override;

  Future<void> submit(detail::Chunk chunk) override;
  /// Withdraws the call's queued chunks, sends a stop to each worker running one (its Scope sees
  /// stop_requested()), and after the call's grace kills and replaces a worker still running
  /// one (not counted in workers_lost).
  void stop_call(const std::shared_ptr<detail::Job>& job) override;
  /// max_workers while workers are spawned on demand; the target after resize() or adapt().
  std::size_t concurrency() const noexcept override;
  /// 2 x workers; 32 x workers while chunks are short (of the call's own chunk size or of a few
  /// items, with a smoothed run time under 1 ms), and each child then holds up to 32 of them, so
  /// task frames go out and results come back several to a write.
  std::size_t chunks_in_flight(std::size_t workers) const noexcept override;
  /// 50 ms: a chunk costs a round trip to a process.
  std::chrono::microseconds target_chunk_duration() const noexcept override { return std::chrono::milliseconds(50); }
  /// workers_target: the count resize() or adapt() moves to; on demand, what the queue wants
  /// (workers holding chunks plus chunks queued, within [min_workers, max_workers]).
  ManagerStats stats() const override;
  /// The ids of the live children ("child-<k>", in slot order); with none alive, one is started
  /// first and the Future completes once it is spawned. Fails with NoWorkers after resize(0), and
  /// with the setup's error once setups failed on every child (see add_setup).
  Future<std::vector<std::string>> broadcast_targets() override;
  /// Every child runs the setup before its next chunk (late spawns and respawns too). A child
  /// whose setup throws exits and its slot is not used again; setups_failed counts it. At most
  /// max_workers children fail before the pool stops spawning (until resize, adapt or another
  /// add_setup); with no child left, queued chunks and later calls fail with the setup's
  /// scale::RemoteError. Throws scale::NotShippable when the setup cannot leave this process.
  void add_setup(std::shared_ptr<detail::Job> setup) override;

  /// Keeps `n` workers (at most max_workers) from now on, and turns adapt() off. Workers are
  /// spawned at once up to n; above n idle workers exit now and busy ones once they finish what
  /// they hold, so nothing is lost or run twice. After resize(0) (with no adapt) a map fails at
  /// once with scale::NoWorkers, and so do chunks still queued when it is called.
  void resize(std::size_t n);
  /// Follows the backlog of the running calls under `policy` from now on (max 0: max_workers;
  /// max_workers caps it), and turns a fixed count off; its scale_down_after replaces
  /// idle_timeout and its min replaces min_workers. Throws std::invalid_argument (naming the
  /// field) for a policy ScalingPolicy::validate() refuses, leaving the pool as it was.
  void adapt(ScalingPolicy policy);
  /// Re-evaluates adapt()'s target (called by the algorithms as they cut and finish chunks).
  void backlog_changed() override;

  std::string_view report_kind() const noexcept override { return "process_pool"; }
  /// The live children ("child-<k>") with their pids; one retiring or above the target is draining.
  std::vector<detail::ReportedWorker> report_workers() const override;

  /// The pids of the worker processes running now (for diagnostics and tests).
  std::vector<pid_t> worker_pids() const;
  /// What each live child holds, read under the pool's lock, so no pump is halfway through
  /// (for diagnostics and tests).
  Holdings holdings() const;

 private:
  std::shared_ptr<detail::ProcessPool> m_pool;
};

}  // namespace scale
