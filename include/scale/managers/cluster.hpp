#pragma once
/// \file scale::ClusterManager: runs chunks on workers that join through a Redis server.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <scale/detail/job.hpp>
#include <scale/future.hpp>
#include <scale/scalability_manager.hpp>
#include <scale/scaling_policy.hpp>

namespace scale {

namespace detail {
class Cluster;
class ClusterDemand;
}

/// Timings and retries of a ClusterManager; meant for designated initialisers:
/// `scale::ClusterManager manager("redis://127.0.0.1:6379", {.wait_for_workers = std::chrono::seconds(5)});`
struct ClusterOptions {
  /// How often a worker renews its heartbeat key (workers take theirs from `--scale-heartbeat-ms`,
  /// 1000 by default); the manager looks at the heartbeats this often (at most every heartbeat_ttl / 3).
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_ttl{3000};      ///< a worker silent this long is lost; its chunks run elsewhere
  std::chrono::milliseconds wait_for_workers{30000};  ///< with no live worker, a chunk fails after this
  /// How many workers the backlog asks for (desired_workers()); max 0: no cap. Checked by the
  /// constructor (std::invalid_argument). See docs/cluster.md, "Asking for workers".
  ScalingPolicy scaling{};
  /// Called on the loop thread with desired_workers() whenever it changes (not for its first value, scaling.min).
  std::function<void(std::size_t)> on_demand;
  unsigned max_retries = 3;                           ///< reruns of a chunk whose worker was lost
  /// Where this manager runs (a name its workers may share through --scale-site), published with
  /// its classes in Redis for the matching of managers to nearby workers; "" for none.
  std::string site;
};

/// A worker seen through its heartbeat.
struct ClusterWorker {
  std::string id;           ///< its consumer name in the Redis consumer group
  std::string host;         ///< the host name it runs on
  int pid = 0;              ///< its process id on that host
  bool compatible = false;  ///< runs this very build (same fingerprint), so it is given this manager's tasks
  std::string fingerprint;  ///< the build fingerprint it announced

  std::size_t concurrency = 1;  ///< chunks it runs at once: its --scale-threads or --scale-processes (or order)
  bool draining = false;        ///< drained: finishing what it holds, then it leaves; given nothing more
  /// Runs chunks on child processes of its own (--scale-processes): after a stop's grace, the child
  /// running a stopped chunk is killed and replaced; a --scale-threads worker cannot do that.
  bool processes = false;
  /// What it provides (scale::Provides): its --scale-provides (with site=<site> for a --scale-site),
  /// or what it was last ordered (WorkerOrder::provides).
  std::map<std::string, std::string> provides;
  std::string site;  ///< where it runs: its --scale-site, "" when not given
  /// Its round trip to Redis, smoothed over its heartbeats (each beat's own SET); 0 until measured.
  std::chrono::microseconds rtt{0};
  /// Since its last heartbeat, as of the workers() call (the manager reads heartbeats at each
  /// scan, so this is one scan period behind at most); none before a scan read it.
  std::optional<std::chrono::milliseconds> heartbeat_age;
};

/// An order to one running worker (ClusterManager::order); fields left empty are left as they are.
struct WorkerOrder {
  /// Chunks it runs at once from now on (its threads, or its processes with --scale-processes); at least 1.
  std::optional<std::size_t> threads;
  /// What it announces that it provides (replaces the whole map).
  std::optional<std::map<std::string, std::string>> provides;
};

/// Runs chunks on any number of worker processes that join through one Redis server: every
/// process whose main builds `scale::Runtime runtime(argc, argv)` and is started with
/// `--scale-worker redis://host:port` serves. Chunks travel on Redis Streams (one per requirement
/// class: RunOptions::resources and ::labels) read by a consumer group of the workers whose
/// --scale-provides meet it; a call no worker seen can ever meet fails at once with
/// scale::Unsatisfiable (see docs/routing.md). Workers keep a heartbeat key with a TTL, and the
/// chunks of a worker whose heartbeat expires run again elsewhere (each item's result is accepted
/// exactly once). Workers of another build are never given tasks. The function must capture nothing, and its Scope must be an
/// http:// or redis:// SharedMemory / SharedEventEmitter (see docs/cluster.md). Destroying the
/// manager fails chunks still queued or running with scale::Stopped and removes its Redis keys.
class ClusterManager final : public ScalabilityManager {
 public:
  /// Connects to `redis_url` (redis://[:password@]host:port[/db]); throws scale::Error for a bad URL.
  explicit ClusterManager(std::string redis_url, ClusterOptions options = {});
  ~ClusterManager() override;

  Future<void> submit(detail::Chunk chunk) override;
  /// The chunks the live compatible workers run at once: the sum of the concurrency each one
  /// announces (at least one). A worker that joins or leaves changes it at once.
  std::size_t concurrency() const noexcept override;
  /// Twice the concurrency; while chunks run briefly (a smoothed run time under 1 ms on the
  /// workers) more, so that the round trips through Redis overlap and travel in batches.
  std::size_t chunks_in_flight(std::size_t workers) const noexcept override;
  /// 200 ms: a chunk costs Redis round trips and a stream entry.
  std::chrono::microseconds target_chunk_duration() const noexcept override { return std::chrono::milliseconds(200); }
  /// workers_alive counts live compatible workers; workers_refused the incompatible ones seen.
  ManagerStats stats() const override;
  /// The ids of the live workers (WorkerResult::worker's form).
  Future<std::vector<std::string>> broadcast_targets() override;
  void add_setup(std::shared_ptr<detail::Job> setup) override;
  /// The live workers seen through their heartbeats, compatible or not.
  std::vector<ClusterWorker> workers() const;
  /// The worker count this manager's backlog wants under ClusterOptions::scaling; also in Redis,
  /// field <manager id> of the hash {scale}:desired:<fingerprint> (the sum: what the build wants).
  std::size_t desired_workers() const noexcept;
  /// Re-evaluates desired_workers(); the algorithms call it as they cut and finish chunks.
  void backlog_changed() override;
  /// A call was stopped: its chunks still queued in Redis are deleted and acknowledged (no worker
  /// runs them), the workers holding the others are told (Scope::stop_requested() turns true there
  /// within about one heartbeat interval), and after the call's grace a --scale-processes worker's
  /// child still running one is killed and replaced, while on a --scale-threads worker the chunk is
  /// given up and reported (that worker drains). See docs/cluster.md, "Stop and progress on the cluster".
  void stop_call(const std::shared_ptr<detail::Job>& job) override;

  /// Orders the live worker `worker_id` (a ClusterWorker::id) to finish the chunks it holds, leave
  /// and exit 0; those chunks are not lost and do not run again. Completes once the worker has
  /// taken the order (within about one heartbeat interval), not once it has exited. Fails with
  /// scale::Error naming the live workers when none has that id.
  Future<void> drain(std::string worker_id);
  /// Sends `order` to the live worker `worker_id`; completes once the worker has taken it (its
  /// heartbeat and workers() then show the change, and a worker given new provides serves the
  /// classes they meet and no others). Fails as drain() does for an unknown id, for threads = 0,
  /// and with std::invalid_argument for provides that scale::parse_provides would refuse. Any
  /// manager of a worker's build may order it.
  Future<void> order(std::string worker_id, WorkerOrder order);

  std::string_view report_kind() const noexcept override { return "cluster"; }
  /// The live workers (workers()), compatible or not, with their heartbeat ages.
  std::vector<detail::ReportedWorker> report_workers() const override;
  /// True: a reporting ClusterManager drains a worker for an order (report_to).
  bool obeys_orders() const noexcept override { return true; }
  /// drain(worker_id).
  Future<void> drain_for_order(std::string worker_id) override;

 private:
  std::shared_ptr<detail::ClusterDemand> m_demand;  // made first: a bad policy throws before the cluster starts
  std::shared_ptr<detail::Cluster> m_cluster;
};

}  // namespace scale
