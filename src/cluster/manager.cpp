// ClusterManager: chunks on a Redis Stream per requirement class of this manager
// (cluster/class_streams.hpp), read by a consumer group of the workers of its build that joined
// with --scale-worker and whose provides meet the class; a call that no worker seen can ever meet
// fails at once with Unsatisfiable (cluster/worker_offers.hpp). Results on a stream per manager,
// which also wakes the manager when a worker joins, changes or leaves; workers watched through
// their heartbeat keys, and the chunks of a silent one queued again; orders to one worker on its
// own list. A stopped call's chunks are withdrawn from their streams, and the workers that hold
// one are told (and, after the grace, that the manager no longer waits); running chunks' progress
// comes back on the results stream. A keyed chunk goes to the own stream of the worker its key
// picks, a pinned one (broadcast) to its worker's (cluster/worker_routes.hpp); setups are a list
// the workers run from before this manager's chunks (cluster/worker_setups.hpp). At each scan the
// manager also publishes its demand and takes its part in matching idle workers to managers
// (cluster/matcher.hpp). See src/cluster/keys.hpp for the keys and docs/cluster.md and
// docs/routing.md for the guarantees.

#include <scale/managers/cluster.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>

#include "cluster/class_streams.hpp"
#include "cluster/demand.hpp"
#include "cluster/keys.hpp"
#include "cluster/matcher.hpp"
#include "cluster/served_time.hpp"
#include "core/short_chunks.hpp"
#include "cluster/worker_offers.hpp"
#include "cluster/worker_order.hpp"
#include "cluster/worker_record.hpp"
#include "cluster/worker_routes.hpp"
#include "cluster/worker_stream.hpp"
#include "core/exception_message.hpp"
#include "core/host_name.hpp"
#include <scale/detail/loop.hpp>
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

using Clock = std::chrono::steady_clock;
using Role = RedisClient::Role;

/// A part of a group on its current attempt.
struct Task {
  std::shared_ptr<TaskGroup> group;
  Chunk chunk;
  std::shared_ptr<ClassStream> home;    // its class's stream, set when it is first queued
  std::shared_ptr<ClassStream> stream;  // where the current attempt is: home, or a worker's own stream
  unsigned attempts = 0;        // times this exact range was lost with its worker
  std::uint64_t attempt = 0;    // the current attempt's id (results of other attempts are dropped)
  std::string entry;            // the current attempt's stream entry, once XADD answered
  Clock::time_point queued_at;  // of the current attempt
  std::int64_t progress = 0;    // Job::progress_units the current attempt reported (in the Job's running sum)
  bool stopped = false;         // its call was stopped: it is withdrawn, or waited for until the grace
  std::string holder;           // the worker that held its entry when its call was stopped
};

/// What a stop's withdrawal learnt of each entry of the call: whether it was still in the stream
/// (XDEL removed it) and which worker held it (its XPENDING line), in the order sent.
struct Withdrawal {
  std::vector<std::uint64_t> attempts;
  std::vector<std::string> streams;
  std::vector<std::string> entries;
  std::vector<bool> deleted;
  std::vector<std::string> holders;
};

/// A worker from the registry hash, with what the last scan found.
struct SeenWorker {
  ClusterWorker info;
  int ttl_ms = 0;
  bool registered = false;  // its record was read (one seen only in a group's pending entries was not)
  std::optional<std::int64_t> silent_ms;  // since its last heartbeat, as the scan's PTTL said
};

/// Task entries by stream, as the group commands take them (XACK and XDEL name one stream).
using StreamEntries = std::map<std::string, std::vector<std::string>>;

/// A scan's pending entries: each stream's XPENDING lines.
using Pending = std::vector<std::pair<std::shared_ptr<ClassStream>, RedisReply>>;

std::string describe(const ClusterWorker& worker) {
  return "worker " + worker.id + " (host " + worker.host + ", pid " + std::to_string(worker.pid) + ")";
}

/// A worker as its record (cluster/worker_record.hpp) announces it.
ClusterWorker worker_of(std::string id, const WorkerRecord& record, const std::string& fingerprint) {
  ClusterWorker worker;
  worker.id = std::move(id);
  worker.host = record.host;
  worker.pid = record.pid;
  worker.fingerprint = record.fingerprint;
  worker.compatible = record.fingerprint == fingerprint;
  worker.concurrency = record.concurrency;
  worker.draining = record.draining;
  worker.processes = record.processes;
  worker.provides = record.provides;
  worker.site = record.site;
  worker.rtt = std::chrono::microseconds(record.rtt_us);
  return worker;
}

/// An order sent to a worker, until the worker says it took it.
struct PendingOrder {
  std::string worker;
  Promise<void> promise;
};

/// What a --scale-processes worker says of a chunk that killed its child ("l" entries, keys.hpp):
/// how the child ended and, when it died of a crash signal, its capsule (the index within the chunk).
struct ChildLoss {
  std::string status;
  std::optional<CrashReport> capsule;
};

ChildLoss child_loss(const std::string& payload) {
  try {
    std::rethrow_exception(decode_exception(payload));
  } catch (const WorkerLost& lost) {
    return ChildLoss{lost.status(), lost.capsule()};
  } catch (const std::exception& error) {
    return ChildLoss{std::string("(its report could not be read: ") + error.what() + ")", std::nullopt};
  }
}

}  // namespace

class Cluster {
  /// The cluster's lock; Promises finished under it complete once it is released.
  class Locked : public CompletingLock {
   public:
    explicit Locked(Cluster& cluster) : CompletingLock(cluster.m_mutex, cluster.m_completions) {}
  };

 public:
  Cluster(std::string url, ClusterOptions options)
      : m_url(std::move(url)),
        m_options(checked(options)),
        m_keys(keys_of(m_url)),
        m_id(cluster_member_id()),
        m_fingerprint(build_fingerprint()),
        m_results(m_keys.results(m_id)),
        m_streams(m_keys, m_fingerprint, m_id, m_options.site),
        m_routes(m_keys),
        m_offers(m_options.wait_for_workers),
        m_served(4 * scan_period(m_options)),
        m_last_live(Clock::now()),
        m_client(std::make_unique<RedisClient>(parse_redis_url(m_url))) {
    m_matcher = std::make_unique<Matcher>(*m_client, m_keys, m_fingerprint, m_id, host_name(), m_options.site,
                                          scan_period(m_options));
  }

  ~Cluster() {
    m_stopping = true;
    m_client->stop();  // joins its I/O thread while every member its callbacks touch is whole
  }

  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  /// Called (on the client's thread, never under the lock) whenever concurrency() changes.
  void on_concurrency_changed(std::function<void()> fn) { m_on_concurrency = std::move(fn); }

  /// Creates the streams and groups (idempotently), announces this manager, starts the result
  /// reader and the scans.
  void start() {
    prepare_streams();
    m_client->send(Role::commands, {"HSET", m_keys.managers(), m_id, m_fingerprint}, ignore);
    m_client->send(Role::commands, {"CONFIG", "GET", "proto-max-bulk-len"},
                   [this](std::exception_ptr error, RedisReply reply) {
                     if (!error && !reply.is_error()) m_bulk_limit = bulk_limit_of(reply);
                   });
    // The reader's first XREAD waits behind the stream's creation on the commands connection.
    m_client->send(Role::commands, {"PING"}, [this](std::exception_ptr, RedisReply) { read_results(); });
    m_client->post([this] { scan(); });
  }

  /// Fails what is outstanding with Stopped, removes this manager's entries and keys, and closes
  /// the client (its I/O thread ends, so no callback runs after this returns).
  void shutdown() {
    std::map<std::uint64_t, PendingOrder> orders;
    {
      Locked lock(*this);
      m_stopping = true;
      for (auto& [attempt, task] : m_attempts) finish_locked(*task, std::make_exception_ptr(Stopped()));
      m_attempts.clear();
      for (const auto& stream : m_streams.all()) stream->attempts.clear();
      for (const auto& stream : m_routes.all()) stream->attempts.clear();
      orders = std::move(m_orders);
      // Its streams are its own: deleting them takes every queued chunk out at once.
      m_streams.remove_all(*m_client);
      m_matcher->leave();
    }
    for (auto& [id, order] : orders) order.promise.set_exception(std::make_exception_ptr(Stopped()));
    auto done = std::make_shared<std::promise<void>>();
    auto finished = done->get_future();
    m_client->send(Role::commands, {"DEL", m_results, m_keys.setups(m_id)}, ignore);
    // NOTE: the PING is sent from HDEL's callback, after the callbacks of every XADD still
    // unanswered above have run (replies come in order) and dropped their entries; its answer
    // comes after those drops, so waiting for it waits for them.
    m_client->send(Role::commands, {"HDEL", m_keys.managers(), m_id}, [this, done](std::exception_ptr, RedisReply) {
      m_client->send(Role::commands, {"PING"}, [done](std::exception_ptr, RedisReply) { done->set_value(); });
    });
    // NOTE: bounded, so an unreachable Redis does not hold up the program's exit.
    finished.wait_for(std::chrono::seconds(2));
  }

  Future<void> submit(Chunk chunk) {
    Future<void> future;
    std::string problem = scope_problem(*chunk.job);
    auto task = start_remote_task<Task>(std::move(chunk), std::move(problem), m_counters, future);
    if (!task) return future;
    Locked lock(*this);
    if (m_stopping) {
      finish_locked(*task, std::make_exception_ptr(Stopped()));
      return future;
    }
    enqueue_locked(std::move(task));
    return future;
  }

  /// A call was stopped (on the loop): its chunks still in the stream are withdrawn (deleted and
  /// acknowledged; their Futures fail at once), the workers holding the others are told (their
  /// chunks see Scope::stop_requested()), and after the call's grace the manager stops waiting:
  /// a --scale-processes worker has its child killed by its own pool (the manager waits a little
  /// longer for its answer), a --scale-threads worker's chunk fails here and is reported.
  void stop_call(const std::shared_ptr<Job>& job) {
    auto withdrawal = std::make_shared<Withdrawal>();
    std::vector<std::uint64_t> stopped;
    {
      Locked lock(*this);
      if (m_stopping) return;
      for (auto& [attempt, task] : m_attempts) {
        if (task->chunk.job != job) continue;
        task->stopped = true;
        stopped.push_back(attempt);
        // NOTE: a chunk whose XADD has not answered yet may be in the stream already, and a worker
        // may read it before anything here could delete it: it is withdrawn like the others once
        // its XADD answers (send_attempt), never failed before that.
        if (task->entry.empty()) continue;
        withdrawal->attempts.push_back(attempt);
        withdrawal->streams.push_back(task->stream->key);
        withdrawal->entries.push_back(task->entry);
      }
    }
    withdraw(withdrawal);
    if (stopped.empty()) return;
    const auto grace = std::max<std::int64_t>(0, job->policy().grace.count());
    m_client->post([this, stopped, grace] { grace_passed(stopped, grace, false); },
                   static_cast<int>(std::min<std::int64_t>(grace, std::numeric_limits<int>::max())));
  }

  /// Takes the entries of stopped chunks out of their streams and finds who holds them; then
  /// withdrawn() fails those no worker had read and tells the holders of the others.
  void withdraw(const std::shared_ptr<Withdrawal>& withdrawal) {
    const std::size_t n = withdrawal->entries.size();
    withdrawal->deleted.resize(n);
    withdrawal->holders.resize(n);
    // NOTE: per entry, in this order: XDEL first, so no worker can read it from now on; then its
    // pending line names the worker that read it before (if any); then XACK, so nothing of the
    // call stays pending in the group. Replies come in order: the last XACK's comes after all.
    for (std::size_t i = 0; i < n; ++i) {
      const std::string& stream = withdrawal->streams[i];
      const std::string& entry = withdrawal->entries[i];
      m_client->send(Role::commands, {"XDEL", stream, entry},
                     [withdrawal, i](std::exception_ptr error, RedisReply reply) {
                       withdrawal->deleted[i] = !error && reply.type == RedisReply::Type::integer && reply.integer == 1;
                     });
      m_client->send(Role::commands, {"XPENDING", stream, cluster_group, entry, entry, "1"},
                     [withdrawal, i](std::exception_ptr error, RedisReply reply) {
                       if (error || reply.is_error() || reply.elements.empty()) return;
                       const RedisReply& line = reply.elements[0];
                       if (line.elements.size() >= 2) withdrawal->holders[i] = line.elements[1].str;
                     });
      m_client->send(Role::commands, {"XACK", stream, cluster_group, entry},
                     [this, withdrawal, i, n](std::exception_ptr, RedisReply) {
                       if (i + 1 == n && !m_stopping) withdrawn(*withdrawal);
                     });
    }
  }

  std::size_t live_workers() const noexcept { return m_counters.workers_alive.load(std::memory_order_relaxed); }
  /// The chunks the live compatible workers run at once (their announced concurrency), or 0.
  std::size_t concurrency() const noexcept { return m_concurrency.load(std::memory_order_relaxed); }

  /// Chunks a call keeps submitted for `workers` at once (ClusterManager::chunks_in_flight; why
  /// in core/short_chunks.hpp).
  std::size_t chunks_in_flight(std::size_t workers) const noexcept { return m_window.chunks_in_flight(workers); }

  /// Sends an order to the live worker `worker_id`; the Future completes when the worker took it.
  Future<void> order(const std::string& worker_id, SentOrder order, const char* what) {
    std::uint64_t id = 0;
    Future<void> taken;
    {
      Locked lock(*this);
      if (m_stopping) return make_failed_future<void>(std::make_exception_ptr(Stopped()));
      const ClusterWorker* found = nullptr;
      for (const auto& worker : m_live)
        if (worker.id == worker_id) found = &worker;
      if (!found) {
        std::string live;
        for (const auto& worker : m_live)
          if (worker.compatible) live += (live.empty() ? "" : ", ") + worker.id;
        return make_failed_future<void>(std::make_exception_ptr(
            Error(std::string("scale::ClusterManager::") + what + ": no live worker has the id '" + worker_id + "'; " +
                  (live.empty() ? std::string("no worker of this build is live now")
                                : "the live workers of this build are " + live) +
                  " (ClusterManager::workers() lists them)")));
      }
      if (!found->compatible)
        return make_failed_future<void>(std::make_exception_ptr(
            Error(std::string("scale::ClusterManager::") + what + ": " + describe(*found) +
                  " runs a different build (fingerprint " + found->fingerprint +
                  ") and obeys only the managers of its own build; order it from a manager of that executable")));
      id = ++m_next_order;
      PendingOrder pending{worker_id, Promise<void>()};
      taken = pending.promise.get_future();
      m_orders.emplace(id, std::move(pending));
    }
    order.id = id;
    order.manager = m_id;
    order.fingerprint = m_fingerprint;
    const std::string list = m_keys.orders(worker_id);
    m_client->send(Role::commands, {"RPUSH", list, encode_order(order)},
                   [this, id](std::exception_ptr error, RedisReply reply) {
                     if (!error && !reply.is_error()) return;
                     if (!error) error = m_client->error_of("RPUSH (an order)", reply);
                     fail_order(id, error);
                   });
    // NOTE: a live worker empties its list at every heartbeat; the list of one that died first
    // expires by itself.
    m_client->send(Role::commands, {"PEXPIRE", list, std::to_string(results_expiry_ms())}, ignore);
    return taken;
  }

  ManagerStats stats() const {
    ManagerStats stats = m_counters.snapshot();
    std::lock_guard lock(m_mutex);
    std::size_t running = 0;
    for (auto& [attempt, task] : m_attempts)
      if (!task->entry.empty() && task->stream->taken.count(task->entry) != 0) ++running;
    stats.tasks_running = running;
    stats.tasks_queued = m_attempts.size() - running;
    return stats;
  }

  std::vector<ClusterWorker> workers() const {
    const auto now = Clock::now();
    std::lock_guard lock(m_mutex);
    std::vector<ClusterWorker> live = m_live;
    for (auto& worker : live) {
      const auto beat = m_beat_at.find(worker.id);
      if (beat != m_beat_at.end())
        worker.heartbeat_age = std::chrono::duration_cast<std::chrono::milliseconds>(now - beat->second);
    }
    return live;
  }

  /// The workers a chunk pinned to one of them may go to now (broadcast).
  std::vector<std::string> broadcast_targets() const {
    std::lock_guard lock(m_mutex);
    std::vector<std::string> ids;
    for (const auto& worker : m_live)
      if (routable_locked(worker)) ids.push_back(worker.id);
    return ids;
  }

  /// Adds a setup (on_every_worker): its task payload goes to the end of this manager's list
  /// (<tag>:setups:<manager>) before any later chunk's XADD, on the same connection, and every
  /// later entry carries the new generation (cluster/worker_setups.hpp).
  void add_setup(const std::shared_ptr<Job>& setup) {
    if (std::string problem = scope_problem(*setup); !problem.empty()) throw Error(problem);
    if (std::string problem = setup->remote_problem(); !problem.empty())
      throw NotShippable("scale::ClusterManager::on_every_worker: " + problem);
    std::string payload;
    append_task_payload(Chunk{setup, 0, 1}, payload);
    Locked lock(*this);
    if (m_stopping) throw Stopped();
    ++m_setup_count;
    const std::string list = m_keys.setups(m_id);
    m_client->send(Role::commands, {"RPUSH", list, std::move(payload)}, ignore);
    m_client->send(Role::commands, {"PEXPIRE", list, std::to_string(results_expiry_ms())}, ignore);
  }

  // Where this manager's entries live, for its demand reporter (cluster/demand.hpp).
  RedisClient& client() noexcept { return *m_client; }
  const ClusterKeys& keys() const noexcept { return m_keys; }
  const std::string& id() const noexcept { return m_id; }
  const std::string& fingerprint() const noexcept { return m_fingerprint; }

 private:
  static void ignore(std::exception_ptr, RedisReply) {}

  static ClusterOptions checked(ClusterOptions options) {
    if (options.heartbeat_ttl.count() <= 0 || options.heartbeat_interval.count() <= 0)
      throw Error("scale::ClusterManager: heartbeat_interval and heartbeat_ttl must be positive");
    return options;
  }

  /// The keys for `url`; m_keys is made before m_client, so the whole URL (options included) is
  /// checked before the client starts its thread.
  static ClusterKeys keys_of(const std::string& url) {
    return cluster_keys(parse_redis_url(url), "scale::ClusterManager");
  }

  /// Why the workers could not reach the job's scope, or "".
  static std::string scope_problem(const Job& job) {
    const SharedMemory* memory = job.scope_memory();
    const SharedEventEmitter* events = job.scope_events();
    const char* what = nullptr;
    if (memory && memory->url().empty())
      what = "SharedMemory";
    else if (events && events->url().empty())
      what = "SharedEventEmitter";
    if (!what) return {};
    return std::string("scale: a ClusterManager's workers run in other processes, often on other machines, and "
                       "cannot reach an in-process ") +
           what + ": create it with a URL that every worker can reach, e.g. scale::" + what +
           "(\"redis://host:6379\") or scale::" + what + "(\"http://host:12345\")";
  }

  void prepare_streams() {
    // NOTE: the results stream is created empty here, and workers add to it with NOMKSTREAM, so
    // results for a manager that has gone (and deleted it) are dropped instead of piling up. It
    // comes first: another manager takes this one for gone once it lacks one
    // (cluster/class_streams.hpp), and the task streams are named in the directory after it.
    m_client->send(Role::commands, {"XGROUP", "CREATE", m_results, "manager", "$", "MKSTREAM"}, ignore);
    m_streams.prepare(*m_client);
  }

  // ----- queueing attempts -----

  /// Gives the task a new attempt id and adds it to its class's stream; a requirement that no
  /// worker seen can ever meet fails it with Unsatisfiable instead.
  void enqueue_locked(std::shared_ptr<Task> task) {
    // NOTE: a chunk that needs nothing costs two tests of an empty map here, nothing more.
    if (!task->home) {
      const Requirement& requirement = task->chunk.job->policy().requirement;
      task->home = requirement.empty() ? m_streams.any() : m_streams.of(*m_client, requirement, Clock::now());
    }
    if (!task->home->requirement.empty() && !satisfiable_locked(*task->home)) {
      task->chunk.job->cancel();
      finish_locked(*task, std::make_exception_ptr(Unsatisfiable(unsatisfiable_locked(*task->home))));
      return;
    }
    if (std::exception_ptr refused = setups_refused_locked()) {
      task->chunk.job->cancel();
      finish_locked(*task, refused);
      return;
    }
    if (!route_locked(*task)) return;
    std::string payload;
    try {
      append_task_payload(task->chunk, payload);
      if (payload.size() + redis_bulk_margin > m_bulk_limit)
        throw Error("scale::ClusterManager: a chunk of " + std::to_string(task->chunk.size()) + " item(s) takes " +
                    std::to_string(payload.size()) + " bytes, more than this Redis accepts in one value " +
                    "(proto-max-bulk-len " + std::to_string(m_bulk_limit.load()) +
                    "); pass a smaller RunOptions::chunk_size");
    } catch (...) {
      task->chunk.job->cancel();
      finish_locked(*task, std::current_exception());
      return;
    }
    take_progress_locked(*task);  // a new attempt reports from 0
    task->attempt = ++m_next_attempt;
    task->entry.clear();
    task->queued_at = Clock::now();
    m_attempts.emplace(task->attempt, task);
    // "g" is the call's grace, for a --scale-processes worker's own pool; "s" the setups'
    // generation, "n" the resources for a worker's own stream (src/cluster/keys.hpp).
    std::vector<std::string> args{"XADD", task->stream->key};
    const bool routed = task->stream != task->home;
    if (routed) args.push_back("NOMKSTREAM");  // a gone worker's stream is not made again
    args.insert(args.end(), {"*", "m", m_id, "a", std::to_string(task->attempt), "g",
                             std::to_string(task->chunk.job->policy().grace.count())});
    if (m_setup_count > 0) args.insert(args.end(), {"s", std::to_string(m_setup_count)});
    if (routed && !task->home->requirement.resources.empty())
      args.insert(args.end(), {"n", encode_amounts(task->home->requirement.resources)});
    args.push_back("p");
    args.push_back(std::move(payload));
    send_attempt(task->attempt, task->stream, std::move(args));
  }

  /// Where the task's attempt goes (task.stream): a pinned chunk to its worker's own stream, a
  /// keyed one to the stream of the worker its key picks (cluster/worker_routes.hpp), any other
  /// (and a keyed one while no worker may take it) to its class's stream. False when the chunk
  /// failed instead: its worker is not there, or refuses this manager.
  bool route_locked(Task& task) {
    const Chunk& chunk = task.chunk;
    if (!chunk.worker.empty()) {
      if (!routable_locked(chunk.worker)) {
        chunk.job->cancel();
        auto refused = m_setup_failed.find(chunk.worker);
        finish_locked(task, refused != m_setup_failed.end()
                                ? refused->second
                                : std::make_exception_ptr(NoWorkers(
                                      "scale::ClusterManager: no live worker '" + chunk.worker +
                                      "' to run a chunk pinned to it (broadcast): it left, was lost or drains; "
                                      "broadcast_targets() lists the workers that take chunks now")));
        return false;
      }
      task.stream = m_routes.stream(chunk.worker);
      return true;
    }
    task.stream = task.home;
    if (!chunk.keyed()) return true;
    const std::vector<std::string>& targets = m_routes.targets(
        *task.home, m_routes_version, [this](const Requirement& requirement) {
          std::vector<std::string> ids;
          for (const auto& worker : m_live)
            if (routable_locked(worker) && requirement.met_by(worker.provides)) ids.push_back(worker.id);
          return ids;
        });
    if (!targets.empty()) task.stream = m_routes.stream(WorkerRoutes::pick(chunk.key, targets));
    return true;
  }

  /// Whether chunks meant for this one worker may go to it now: live, of this build, not
  /// draining, not lost or leaving, its setups not failed.
  bool routable_locked(const ClusterWorker& worker) const {
    return worker.compatible && !worker.draining && m_lost.count(worker.id) == 0 && m_left.count(worker.id) == 0 &&
           m_setup_failed.count(worker.id) == 0;
  }
  bool routable_locked(const std::string& id) const {
    for (const auto& worker : m_live)
      if (worker.id == id) return routable_locked(worker);
    return false;
  }

  /// The setups' error once every live worker of this build refused this manager because a setup
  /// threw there (its calls fail with it rather than wait for workers), else null.
  std::exception_ptr setups_refused_locked() const {
    if (m_setup_failed.empty()) return nullptr;
    bool any = false;
    for (const auto& worker : m_live) {
      if (!worker.compatible || m_lost.count(worker.id) != 0 || m_left.count(worker.id) != 0) continue;
      any = true;
      if (m_setup_failed.count(worker.id) == 0) return nullptr;
    }
    return any ? m_setup_error : nullptr;
  }

  /// Whether worker `id` will run nothing more of this manager: gone from the live set, lost,
  /// left, or refusing it (its setup threw). A draining worker still runs what it read, and says
  /// when it leaves.
  bool gone_locked(const std::string& id) const {
    if (m_lost.count(id) != 0 || m_left.count(id) != 0 || m_setup_failed.count(id) != 0) return true;
    return std::none_of(m_live.begin(), m_live.end(),
                        [&](const ClusterWorker& worker) { return worker.id == id && worker.compatible; });
  }

  /// Attempts on the own streams of workers that will run nothing more of this manager are queued
  /// again, each to its next choice (a pinned one fails). Those workers' streams are forgotten once
  /// nothing of this manager is on them.
  void reroute_locked(StreamEntries& to_drop) {
    if (m_routes.empty()) return;  // nothing was ever routed: the common case
    std::vector<std::shared_ptr<Task>> moved;
    for (auto& [attempt, task] : m_attempts) {
      const std::string* worker = m_routes.worker_of(*task->stream);
      if (worker && gone_locked(*worker)) moved.push_back(task);
    }
    for (auto& task : moved) {
      retire_attempt_locked(*task, to_drop);
      enqueue_locked(std::move(task));
    }
    for (const auto& stream : m_routes.all()) {
      const std::string* worker = m_routes.worker_of(*stream);
      if (worker && stream->attempts.empty() && gone_locked(*worker)) m_routes.forget(std::string(*worker));
    }
  }

  /// Whether a worker seen can ever meet `stream`'s requirement (none seen at all: it waits, for
  /// NoWorkers); checked once per change of the offers, not per chunk.
  bool satisfiable_locked(ClassStream& stream) {
    if (m_offers.empty()) return true;
    if (stream.met_version != m_offers.version()) {
      stream.met = m_offers.can_meet(stream.requirement);
      stream.met_version = m_offers.version();
    }
    return stream.met;
  }

  std::string unsatisfiable_locked(const ClassStream& stream) const {
    return "scale::ClusterManager: " + unsatisfiable_message(stream.requirement, m_offers.offers());
  }

  /// XADD of an attempt (`args`, its payload last) to its stream.
  void send_attempt(std::uint64_t attempt, std::shared_ptr<ClassStream> stream, std::vector<std::string> args) {
    // NOTE: the arguments are kept for a retry; the payload is copied only for one.
    auto sent = std::make_shared<std::vector<std::string>>(std::move(args));
    std::vector<std::string> command = *sent;
    m_client->send(Role::commands, std::move(command),
                   [this, attempt, stream, sent](std::exception_ptr error, RedisReply reply) mutable {
                     Locked lock(*this);
                     auto at = m_attempts.find(attempt);
                     if (at == m_attempts.end()) {
                       // Retired before Redis answered (the manager shut down, the call was
                       // cancelled): no one wants the entry, so no worker may run it.
                       if (!error && reply.type == RedisReply::Type::string) drop_entries({{stream->key, {reply.str}}});
                       return;
                     }
                     if (!error && reply.is_error()) {
                       // Redis refused the entry (e.g. larger than its proto-max-bulk-len): no retry helps.
                       auto task = at->second;
                       m_attempts.erase(at);
                       task->chunk.job->cancel();
                       finish_locked(*task, m_client->error_of("XADD (a chunk of " + std::to_string(sent->back().size()) +
                                                                   " bytes; a smaller RunOptions::chunk_size may help)",
                                                               reply));
                       return;
                     }
                     if ((error || reply.type != RedisReply::Type::string) && at->second->stopped) {
                       // Stopped, and Redis took nothing: nothing to withdraw.
                       auto task = at->second;
                       StreamEntries none;
                       retire_attempt_locked(*task, none);
                       finish_locked(*task, std::make_exception_ptr(Cancelled(cancelled_message())));
                       return;
                     }
                     if (error || reply.type != RedisReply::Type::string) {
                       // Redis is away (or, nil, a worker's own stream is gone, and the scan that finds
                       // the worker gone queues the chunk elsewhere): try again; the wait for workers
                       // bounds how long.
                       if (!m_stopping)
                         m_client->post(
                             [this, attempt, stream, sent]() mutable {
                               Locked inner(*this);
                               if (m_attempts.count(attempt) != 0 && !m_stopping)
                                 send_attempt(attempt, stream, std::move(*sent));
                             },
                             200);
                       return;
                     }
                     at->second->entry = reply.str;
                     stream->attempts.emplace(reply.str, attempt);
                     if (at->second->stopped) {
                       // Its call was stopped while the XADD was on its way: a worker may have read
                       // the entry already, so it is withdrawn as stop_call withdraws the others.
                       auto withdrawal = std::make_shared<Withdrawal>();
                       withdrawal->attempts.push_back(attempt);
                       withdrawal->streams.push_back(stream->key);
                       withdrawal->entries.push_back(reply.str);
                       withdraw(withdrawal);
                     }
                   });
  }

  /// Ends the current attempt of a task without accepting anything from it: its entry is
  /// acknowledged and deleted, so no worker runs it, and its late result is dropped.
  void retire_attempt_locked(Task& task, StreamEntries& entries) {
    take_progress_locked(task);
    m_attempts.erase(task.attempt);
    if (!task.entry.empty()) {
      task.stream->attempts.erase(task.entry);
      entries[task.stream->key].push_back(task.entry);
    }
    task.attempt = 0;
    task.entry.clear();
  }

  void drop_entries(const StreamEntries& entries) {
    for (const auto& [stream, ids] : entries) {
      if (ids.empty()) continue;
      std::vector<std::string> ack{"XACK", stream, cluster_group};
      std::vector<std::string> del{"XDEL", stream};
      ack.insert(ack.end(), ids.begin(), ids.end());
      del.insert(del.end(), ids.begin(), ids.end());
      m_client->send(Role::commands, std::move(ack), ignore);
      m_client->send(Role::commands, std::move(del), ignore);
    }
  }

  /// What a stop's withdrawal found: an entry no worker had read fails now; the workers that hold
  /// the others are told to stop them; one a worker finished already has its answer on the way.
  void withdrawn(const Withdrawal& withdrawal) {
    std::map<std::string, std::vector<std::string>> to_stop;  // worker → its chunk keys
    {
      Locked lock(*this);
      if (m_stopping) return;
      for (std::size_t i = 0; i < withdrawal.attempts.size(); ++i) {
        auto at = m_attempts.find(withdrawal.attempts[i]);
        if (at == m_attempts.end()) continue;  // its answer came meanwhile
        auto task = at->second;
        if (!withdrawal.holders[i].empty()) {
          task->holder = withdrawal.holders[i];
          to_stop[task->holder].push_back(chunk_key(withdrawal.streams[i], withdrawal.entries[i]));
        } else if (withdrawal.deleted[i]) {
          StreamEntries none;  // deleted and acknowledged already
          retire_attempt_locked(*task, none);
          finish_locked(*task, std::make_exception_ptr(Cancelled(cancelled_message())));
        }
      }
    }
    for (auto& [worker, entries] : to_stop) {
      SentOrder order;
      order.stop = std::move(entries);
      send_chunk_order(worker, std::move(order));
    }
  }

  /// The grace of a stopped call has passed (`late`: and the extra wait for a --scale-processes
  /// worker's answer). A chunk still outstanding on a worker with child processes waits a little
  /// longer: that worker's pool kills the child and the chunk's answer comes. Any other fails now,
  /// and is reported; its worker is told that no one waits for it (a --scale-threads worker then
  /// drains, as its thread cannot be stopped).
  void grace_passed(const std::vector<std::uint64_t>& attempts, std::int64_t grace, bool late) {
    std::map<std::string, std::vector<std::string>> to_abandon;
    std::vector<std::uint64_t> waiting;
    std::vector<std::string> reports;
    {
      Locked lock(*this);
      if (m_stopping) return;
      for (std::uint64_t attempt : attempts) {
        auto at = m_attempts.find(attempt);
        if (at == m_attempts.end()) continue;
        auto task = at->second;
        const ClusterWorker* holder = nullptr;
        for (const auto& worker : m_live)
          if (worker.id == task->holder) holder = &worker;
        if (!task->holder.empty()) to_abandon[task->holder].push_back(chunk_key(task->stream->key, task->entry));
        if (!late && holder && holder->processes) {
          waiting.push_back(attempt);
          continue;
        }
        std::string where = holder ? describe(*holder)
                                   : (task->holder.empty() ? std::string("no worker") : "worker " + task->holder);
        std::string report = "scale::ClusterManager: a stopped chunk (items " + std::to_string(task->chunk.begin) +
                             " to " + std::to_string(task->chunk.end - 1) + ") still ran on " + where + " after the grace of " +
                             std::to_string(grace) + " ms (RunOptions::grace); the call no longer waits for it";
        if (holder && !holder->processes)
          report += ". A thread cannot be stopped: that worker takes no more chunks and leaves once the chunk returns; "
                    "start workers with --scale-processes N to have such a chunk's process killed and replaced";
        else if (holder)
          report += ". Its worker's own process pool did not answer after killing the child running it";
        reports.push_back(report);
        StreamEntries none;  // acknowledged and deleted when the call was stopped
        retire_attempt_locked(*task, none);
        finish_locked(*task, std::make_exception_ptr(Cancelled(cancelled_message() + (": " + report))));
      }
    }
    for (auto& report : reports) log_error(report);
    for (auto& [worker, entries] : to_abandon) {
      SentOrder order;
      order.abandon = std::move(entries);
      send_chunk_order(worker, std::move(order));
    }
    if (waiting.empty()) return;
    // The worker reads the abandon within a heartbeat; its pool killed the child already.
    const auto extra = m_options.heartbeat_interval.count() + m_options.heartbeat_ttl.count();
    m_client->post([this, waiting, grace] { grace_passed(waiting, grace, true); },
                   static_cast<int>(std::min<std::int64_t>(extra, std::numeric_limits<int>::max())));
  }

  /// A stop or abandon for chunks a worker holds, on its orders list (no one waits for an "o").
  void send_chunk_order(const std::string& worker, SentOrder order) {
    order.manager = m_id;
    order.fingerprint = m_fingerprint;
    const std::string list = m_keys.orders(worker);
    m_client->send(Role::commands, {"RPUSH", list, encode_order(order)}, ignore);
    m_client->send(Role::commands, {"PEXPIRE", list, std::to_string(results_expiry_ms())}, ignore);
  }

  /// A running chunk's progress ("g"): what it adds to the Job's running sum since its last report.
  void progress_reported(std::uint64_t attempt, std::string_view payload) {
    Locked lock(*this);
    auto at = m_attempts.find(attempt);
    if (at == m_attempts.end() || !at->second->chunk.job) return;  // an attempt that ended: dropped
    Task& task = *at->second;
    const std::int64_t most = Job::progress_units(static_cast<double>(task.chunk.size()));
    const std::int64_t units = std::clamp<std::int64_t>(std::strtoll(std::string(payload).c_str(), nullptr, 10), 0, most);
    task.chunk.job->add_running_progress(units - task.progress);
    task.progress = units;
  }

  /// Takes the attempt's reported progress away from its Job's running sum (its answer came, it was
  /// lost, withdrawn or abandoned, or it runs again).
  static void take_progress_locked(Task& task) {
    if (task.progress != 0 && task.chunk.job) task.chunk.job->add_running_progress(-task.progress);
    task.progress = 0;
  }

  /// A task whose worker was lost (or that ran past its timeout): split it, run it again, or give
  /// up with WorkerLost, as the process pool does.
  void rerun_locked(std::shared_ptr<Task> task, const std::string& status, const CrashReport* capsule = nullptr) {
    auto finish = [this](Task& part, std::exception_ptr error) { finish_locked(part, std::move(error)); };
    for (auto& again : rerun_lost_task(std::move(task), status, m_options.max_retries, m_counters, finish, capsule))
      enqueue_locked(std::move(again));
  }


  /// Completes one part of a group: the group's Promise fails with the first error, or succeeds
  /// once every part has.
  void finish_locked(Task& task, std::exception_ptr error) {
    take_progress_locked(task);
    task.chunk = Chunk{};  // NOTE: the Job may go away once the Promise completes
    m_completions.finish(*task.group, std::move(error), m_counters);
  }

  // ----- results -----

  void read_results() {
    if (m_stopping) return;
    m_client->send(Role::blocking, {"XREAD", "COUNT", "1000", "BLOCK", "1000", "STREAMS", m_results, m_last_result},
                   [this](std::exception_ptr error, RedisReply reply) {
                     if (m_stopping) return;
                     if (error || reply.is_error()) {
                       m_client->post([this] { read_results(); }, 200);  // the connection reopens with backoff
                       return;
                     }
                     if (!reply.is_nil() && !reply.elements.empty() && reply.elements[0].elements.size() == 2)
                       results(reply.elements[0].elements[1]);
                     read_results();
                   });
  }

  void results(const RedisReply& entries) {
    std::vector<std::string> del{"XDEL", m_results};
    for (const RedisReply& entry : entries.elements) {
      if (entry.elements.size() != 2) continue;
      m_last_result = entry.elements[0].str;
      del.push_back(m_last_result);
      const RedisReply& fields = entry.elements[1];
      std::string_view attempt_text, kind, payload, worker, took;
      for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
        const std::string& name = fields.elements[i].str;
        if (name == "a") attempt_text = fields.elements[i + 1].str;
        if (name == "k") kind = fields.elements[i + 1].str;
        if (name == "p") payload = fields.elements[i + 1].str;
        if (name == "w") worker = fields.elements[i + 1].str;
        if (name == "t") took = fields.elements[i + 1].str;
      }
      const std::uint64_t attempt = std::strtoull(std::string(attempt_text).c_str(), nullptr, 10);
      if (kind == "g")
        progress_reported(attempt, payload);
      else if (kind == "j" || kind == "x")
        announced(std::string(worker), kind == "x", std::string(payload));
      else if (kind == "o")
        order_taken(attempt);
      else if (kind == "l")
        lost_in_child(attempt, std::string(worker), std::string(payload));
      else if (kind == "b")
        given_back(attempt);
      else if (kind == "f")
        setup_failed(std::string(worker), payload);
      else
        result(attempt, kind, payload, worker,
               std::chrono::microseconds(std::strtoll(std::string(took).c_str(), nullptr, 10)));
    }
    m_client->send(Role::commands, std::move(del), ignore);
  }

  void result(std::uint64_t attempt, std::string_view kind, std::string_view payload, std::string_view worker,
              std::chrono::microseconds took) {
    std::shared_ptr<Task> task;
    bool group_finished = false;
    {
      Locked lock(*this);
      auto at = m_attempts.find(attempt);
      if (at == m_attempts.end()) {
        ++m_late_results;  // an attempt reclaimed (or abandoned) before its result came: dropped
        return;
      }
      task = at->second;
      group_finished = task->group->finished;
      m_attempts.erase(at);
      task->stream->attempts.erase(task->entry);
      if (took.count() > 0) m_served.add(took, Clock::now());
      m_window.finished(took, task->chunk.job->policy().chunk_size, task->chunk.size());
    }
    const TaskAnswer answer = kind == "e" ? TaskAnswer::error : TaskAnswer::results;
    // NOTE: the time the worker ran the chunk, not the time from XADD to result: with two chunks
    // in flight per slot each one waits in the stream about as long as it runs, and that wait
    // would double the time per item the dispatch sizes chunks from.
    if (answer == TaskAnswer::results && took.count() > 0) task->chunk.job->record_run(task->chunk.size(), took);
    std::exception_ptr error = hand_back(task->chunk, group_finished, answer, payload);
    if (!error) task->chunk.job->ran_on(task->chunk.begin, task->chunk.end, worker);
    Locked lock(*this);
    finish_locked(*task, error);
  }

  /// A worker's setup of this manager threw ("f"): that worker takes none of its chunks (it gives
  /// back those it read), and once no live worker of the build is left that may, every call
  /// fails with the setup's exception instead of waiting for workers.
  void setup_failed(const std::string& worker, std::string_view payload) {
    std::exception_ptr error;
    try {
      error = decode_exception(payload);
    } catch (...) {
      error = std::current_exception();
    }
    StreamEntries to_drop;
    {
      Locked lock(*this);
      if (m_stopping || worker.empty() || !m_setup_failed.emplace(worker, error).second) return;
      ++m_counters.setups_failed;
      ++m_routes_version;
      m_setup_error = error;
      if (setups_refused_locked()) {
        std::vector<std::shared_ptr<Task>> failing;
        for (auto& [attempt, task] : m_attempts) failing.push_back(task);
        for (auto& task : failing) {
          retire_attempt_locked(*task, to_drop);
          task->chunk.job->cancel();
          finish_locked(*task, error);
        }
      } else {
        reroute_locked(to_drop);
      }
    }
    drop_entries(to_drop);
  }

  /// A --scale-processes worker's child died with the chunk: the worker stays, and the chunk runs
  /// again as any lost chunk does (split, retried, or WorkerLost naming its item, with the
  /// capsule of the last crash: its index made the call's, its item read from the call's items).
  void lost_in_child(std::uint64_t attempt, const std::string& worker, const std::string& payload) {
    ChildLoss loss = child_loss(payload);
    Locked lock(*this);
    auto at = m_attempts.find(attempt);
    if (at == m_attempts.end()) {
      ++m_late_results;
      return;
    }
    auto task = at->second;
    take_progress_locked(*task);
    m_attempts.erase(at);
    task->stream->attempts.erase(task->entry);
    task->attempt = 0;
    task->entry.clear();
    if (loss.capsule && task->chunk.job) {
      loss.capsule->item_index += task->chunk.begin;
      loss.capsule->item = task->chunk.job->item_text(loss.capsule->item_index);
    }
    rerun_locked(std::move(task), "the process running it on worker " + worker + " died: " + loss.status,
                 loss.capsule ? &*loss.capsule : nullptr);
  }

  /// A worker read the attempt's entry but could not start it (its amounts or slots were taken in
  /// the meantime; cluster/chunk_reader.hpp): the entry goes, and the chunk is queued again, as
  /// the same try (nothing counts as retried). A stopped call's chunk ends as stopped instead.
  void given_back(std::uint64_t attempt) {
    Locked lock(*this);
    auto at = m_attempts.find(attempt);
    if (at == m_attempts.end() || m_stopping) return;
    auto task = at->second;
    StreamEntries entries;
    retire_attempt_locked(*task, entries);
    drop_entries(entries);
    if (task->stopped) {
      finish_locked(*task, std::make_exception_ptr(Cancelled(cancelled_message())));
      return;
    }
    enqueue_locked(std::move(task));
  }

  /// A worker's "j" (joined, or its record changed) or "x" (it leaves): the live set changes now,
  /// not at the next scan, so a joining worker gets chunks at once.
  void announced(const std::string& id, bool leaving, const std::string& text) {
    std::optional<WorkerRecord> record = decode_worker_record(text);
    if (id.empty() || !record) return;
    bool changed = false;
    StreamEntries to_drop;
    {
      Locked lock(*this);
      if (m_stopping) return;
      std::vector<ClusterWorker> live = m_live;
      std::erase_if(live, [&](const ClusterWorker& worker) { return worker.id == id; });
      if (leaving) {
        m_left.insert(id);
      } else {
        ClusterWorker worker = worker_of(id, *record, m_fingerprint);
        const auto now = Clock::now();
        if (worker.compatible) {
          if (m_joined.insert(id).second) ++m_counters.workers_spawned;
          m_offers.seen(id, worker.provides, now);
        }
        m_announced_at[id] = now;
        live.push_back(std::move(worker));
      }
      changed = set_live_locked(std::move(live));
      reroute_locked(to_drop);
      fail_unsatisfiable_locked(to_drop);
    }
    drop_entries(to_drop);
    if (changed) concurrency_changed();
  }

  void order_taken(std::uint64_t id) {
    if (auto promise = take_order(id)) promise->set_value();
  }

  void fail_order(std::uint64_t id, std::exception_ptr error) {
    if (auto promise = take_order(id)) promise->set_exception(std::move(error));
  }

  /// The pending order's Promise, removed from the table (completed outside the lock), or none.
  std::optional<Promise<void>> take_order(std::uint64_t id) {
    Locked lock(*this);
    auto at = m_orders.find(id);
    if (at == m_orders.end()) return std::nullopt;
    std::optional<Promise<void>> promise(std::move(at->second.promise));
    m_orders.erase(at);
    return promise;
  }

  /// The live workers are now `live`: the counts and the concurrency follow. True when
  /// concurrency() changed.
  bool set_live_locked(std::vector<ClusterWorker> live) {
    std::size_t compatible = 0, slots = 0;
    for (const auto& worker : live) {
      if (!worker.compatible) continue;
      ++compatible;
      if (!worker.draining) slots += std::max<std::size_t>(1, worker.concurrency);
    }
    m_live = std::move(live);
    // A worker no longer live keeps no heartbeat time.
    std::erase_if(m_beat_at, [&](const auto& beat) {
      return std::none_of(m_live.begin(), m_live.end(), [&](const ClusterWorker& worker) { return worker.id == beat.first; });
    });
    ++m_routes_version;
    m_counters.workers_alive = compatible;
    if (compatible > 0) m_last_live = Clock::now();
    return m_concurrency.exchange(slots) != slots;
  }

  void concurrency_changed() {
    if (m_on_concurrency && !m_stopping) m_on_concurrency();
  }

  /// The offers changed: queued chunks of a class that no worker seen can meet any more (one
  /// ordered to provide less, or gone for longer than wait_for_workers while others stay) fail
  /// with Unsatisfiable. One a worker holds runs on. Once per change of the offers.
  void fail_unsatisfiable_locked(StreamEntries& to_drop) {
    if (m_offers.version() == m_checked_offers) return;
    m_checked_offers = m_offers.version();
    std::vector<std::shared_ptr<Task>> failing;
    for (auto& [attempt, task] : m_attempts) {
      ClassStream& home = *task->home;
      if (home.requirement.empty() || satisfiable_locked(home)) continue;
      if (!task->entry.empty() && task->stream->taken.count(task->entry) != 0) continue;
      failing.push_back(task);
    }
    for (auto& task : failing) {
      const std::string message = unsatisfiable_locked(*task->home);
      retire_attempt_locked(*task, to_drop);
      task->chunk.job->cancel();
      finish_locked(*task, std::make_exception_ptr(Unsatisfiable(message)));
    }
  }

  // ----- workers: the scan -----

  /// Every interval: the group's pending entries and the registry, then the heartbeat of every
  /// worker either names (a worker that took an entry and died before it registered counts too),
  /// pipelined; then lost workers, timeouts and the wait for workers.
  void scan() {
    if (m_stopping) return;
    auto pending = std::make_shared<Pending>();
    const auto started = Clock::now();
    {
      Locked lock(*this);
      for (auto& stream : m_streams.all()) pending->emplace_back(std::move(stream), RedisReply{});
      for (auto& stream : m_routes.all()) pending->emplace_back(std::move(stream), RedisReply{});
    }
    for (std::size_t i = 0; i < pending->size(); ++i)
      m_client->send(Role::commands, {"XPENDING", (*pending)[i].first->key, cluster_group, "-", "+", "10000"},
                     [pending, i](std::exception_ptr error, RedisReply reply) {
                       if (!error && !reply.is_error()) (*pending)[i].second = std::move(reply);
                     });
    m_client->send(
        Role::commands, {"HGETALL", m_keys.workers()}, [this, pending, started](std::exception_ptr error, RedisReply reply) {
          if (m_stopping) return;
          if (error || reply.is_error()) {
            scanned(started, {}, {}, {}, false, describe_error(error, reply, "HGETALL"));
            return next_scan();
          }
          auto seen = std::make_shared<std::vector<SeenWorker>>();
          std::set<std::string> ids;
          for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
            std::optional<WorkerRecord> record = decode_worker_record(reply.elements[i + 1].str);
            if (!record) continue;  // not a worker of ours
            SeenWorker worker;
            worker.info = worker_of(reply.elements[i].str, *record, m_fingerprint);
            worker.ttl_ms = record->ttl_ms;
            worker.registered = true;
            ids.insert(worker.info.id);
            seen->push_back(std::move(worker));
          }
          for (const auto& [stream, lines] : *pending)
            for (const RedisReply& item : lines.elements) {
              if (item.elements.size() < 2 || !ids.insert(item.elements[1].str).second) continue;
              SeenWorker unregistered;  // in this build's group, so of this build
              unregistered.info.id = item.elements[1].str;
              unregistered.info.fingerprint = m_fingerprint;
              unregistered.info.compatible = true;
              seen->push_back(std::move(unregistered));
            }
          auto ttls = std::make_shared<std::vector<std::int64_t>>(seen->size(), -2);
          for (std::size_t i = 0; i < seen->size(); ++i)
            m_client->send(Role::commands, {"PTTL", m_keys.heartbeat((*seen)[i].info.id)},
                           [ttls, i](std::exception_ptr error, RedisReply reply) {
                             if (!error && reply.type == RedisReply::Type::integer) (*ttls)[i] = reply.integer;
                           });
          // NOTE: the result stream outlives a manager that was killed only by this long; workers then
          // drop that manager's results (NOMKSTREAM). A live manager renews it at every scan, and
          // should it lapse anyway (Redis away for that long), the scan below makes it again.
          m_client->send(Role::commands, {"PEXPIRE", m_results, std::to_string(results_expiry_ms())}, ignore);
          m_client->send(Role::commands, {"EXISTS", m_results},
                         [this, seen, ttls, pending, started](std::exception_ptr error, RedisReply reply) {
                           if (m_stopping) return;
                           // Replies come in order: the PTTLs have been answered.
                           const bool results_exist = !error && reply.type == RedisReply::Type::integer &&
                                                      reply.integer == 1;
                           std::vector<SeenWorker> workers = std::move(*seen);
                           std::vector<bool> alive(workers.size());
                           for (std::size_t i = 0; i < workers.size(); ++i) {
                             const std::int64_t ttl = (*ttls)[i];
                             // Silent for (its TTL - what is left of it); -1: a key without a TTL.
                             const std::int64_t silent = workers[i].ttl_ms - ttl;
                             alive[i] = ttl == -1 || (ttl > 0 && silent <= m_options.heartbeat_ttl.count());
                             if (ttl > 0 && workers[i].registered) workers[i].silent_ms = std::max<std::int64_t>(0, silent);
                           }
                           scanned(started, std::move(workers), std::move(alive), std::move(*pending),
                                   !error && results_exist,
                                   error ? describe_error(error, reply, "EXISTS") : std::string());
                           next_scan();
                         });
        });
  }

  std::int64_t results_expiry_ms() const {
    return std::max<std::int64_t>(60'000, 20 * m_options.heartbeat_ttl.count());
  }

  /// How often the manager scans: every heartbeat interval, at most every heartbeat_ttl / 3, within [10 ms, 1 s].
  static std::chrono::milliseconds scan_period(const ClusterOptions& options) {
    return std::chrono::milliseconds(std::clamp<std::int64_t>(
        std::min<std::int64_t>(options.heartbeat_interval.count(), options.heartbeat_ttl.count() / 3), 10, 1000));
  }

  void next_scan() {
    if (m_stopping) return;
    m_client->post([this] { scan(); }, static_cast<int>(scan_period(m_options).count()));
  }

  static std::string describe_error(std::exception_ptr error, const RedisReply& reply, const char* command) {
    if (!error) return std::string("Redis answered ") + command + ": " + reply.str;
    return exception_message(error);
  }

  /// What a scan begun at `started` found: workers with whether each is alive, the groups' pending
  /// entries (each [entry, consumer, idle ms, deliveries], per stream), whether the results stream
  /// is still there.
  void scanned(Clock::time_point started, std::vector<SeenWorker> workers, std::vector<bool> alive, Pending pending,
               bool results_exist, std::string redis_error) {
    StreamEntries to_drop;
    std::vector<std::string> cleanup;  // dead workers with nothing left pending
    std::vector<std::string> warnings;
    std::vector<std::pair<Promise<void>, std::string>> orphaned;  // orders whose worker went first
    bool changed = false;
    {
      Locked lock(*this);
      if (m_stopping) return;
      const auto now = Clock::now();
      m_redis_error = std::move(redis_error);

      // Entries taken by each consumer, and how long ago (for timeouts).
      struct Taken {
        ClassStream* stream;
        std::string entry;
        std::int64_t idle;
      };
      std::map<std::string, std::vector<Taken>> taken_by;
      for (auto& [stream, lines] : pending) {
        stream->taken.clear();
        for (const RedisReply& item : lines.elements) {
          if (item.elements.size() < 3) continue;
          taken_by[item.elements[1].str].push_back(Taken{stream.get(), item.elements[0].str, item.elements[2].integer});
          stream->taken.insert(item.elements[0].str);
        }
      }

      std::vector<ClusterWorker> live;
      std::set<std::string> seen_ids;
      for (std::size_t i = 0; i < workers.size(); ++i) {
        ClusterWorker& info = workers[i].info;
        seen_ids.insert(info.id);
        if (alive[i] && workers[i].silent_ms) m_beat_at[info.id] = now - std::chrono::milliseconds(*workers[i].silent_ms);
        if (alive[i]) {
          // NOTE: a worker that announced a change (an order taken) after this scan read the
          // registry is as it announced, not as the registry said before.
          const auto announced = m_announced_at.find(info.id);
          if (announced != m_announced_at.end() && announced->second > started) {
            const auto fresher = std::find_if(m_live.begin(), m_live.end(),
                                              [&](const ClusterWorker& worker) { return worker.id == info.id; });
            if (fresher != m_live.end()) info = *fresher;
          }
          live.push_back(info);
          if (info.compatible) {
            if (m_joined.insert(info.id).second) ++m_counters.workers_spawned;
            if (workers[i].registered) m_offers.seen(info.id, info.provides, now);
          } else if (m_refused.insert(info.id).second) {
            ++m_counters.workers_refused;
            warnings.push_back(describe(info) + " runs a different build (fingerprint " + info.fingerprint +
                               ", this manager " + m_fingerprint +
                               "); it is given none of this manager's tasks. Start workers from this very executable.");
          }
          continue;
        }
        if (!info.compatible) continue;  // its own build's managers look after it
        // A lost worker: its entries run again; once nothing is left pending on it, it leaves the
        // registry and this manager's groups (another manager's streams show it to that manager
        // as a worker without a heartbeat, which reruns its own entries the same way). One that
        // said it leaves (a drain, SIGTERM) and whose keys this scan caught half deleted is not lost.
        if (m_joined.count(info.id) != 0 && m_left.count(info.id) == 0 && m_lost.insert(info.id).second) {
          ++m_counters.workers_lost;
          ++m_routes_version;  // its keys go to their next choice from now on
          // Its own stream: what this manager had there is queued elsewhere below; other managers
          // do the same from their own records.
          m_client->send(Role::commands, {"DEL", m_keys.worker_tasks(info.id)}, ignore);
        }
        bool others = false;
        for (const Taken& taken : taken_by[info.id]) {
          auto at = taken.stream->attempts.find(taken.entry);
          if (at == taken.stream->attempts.end()) {
            others = true;  // retired already: its acknowledgement is on its way
            continue;
          }
          auto task = m_attempts.at(at->second);
          retire_attempt_locked(*task, to_drop);
          rerun_locked(std::move(task), "its heartbeat stopped: " + describe(info) + " was silent for over " +
                                            std::to_string(m_options.heartbeat_ttl.count()) + " ms");
        }
        if (!others) cleanup.push_back(info.id);
      }

      // Per-task timeouts: the pending entry's idle time is how long its worker has been running it.
      for (auto& [consumer, entries] : taken_by) {
        for (const Taken& taken : entries) {
          auto at = taken.stream->attempts.find(taken.entry);
          if (at == taken.stream->attempts.end()) continue;
          auto task = m_attempts.at(at->second);
          const auto limit = task->chunk.job->policy().timeout;
          if (limit.count() <= 0 || taken.idle < limit.count()) continue;
          retire_attempt_locked(*task, to_drop);
          rerun_locked(std::move(task),
                       "timed out after " + std::to_string(limit.count()) + " ms on worker " + consumer);
        }
      }

      // A Redis that restarted (or was flushed) forgot the streams: make them again and queue
      // every outstanding attempt anew.
      if (m_redis_error.empty() && !results_exist) {
        prepare_streams();
        std::vector<std::shared_ptr<Task>> outstanding;
        for (auto& [attempt, task] : m_attempts) outstanding.push_back(task);
        m_attempts.clear();
        for (const auto& stream : m_streams.all()) {
          stream->attempts.clear();
          stream->taken.clear();
        }
        for (const auto& stream : m_routes.all()) {
          stream->attempts.clear();
          stream->taken.clear();
        }
        for (auto& task : outstanding) enqueue_locked(std::move(task));
        m_client->send(Role::commands, {"HSET", m_keys.managers(), m_id, m_fingerprint}, ignore);
      }

      // A worker that announced itself since this scan read the registry is still live.
      for (const auto& worker : m_live) {
        auto at = m_announced_at.find(worker.id);
        if (seen_ids.count(worker.id) == 0 && at != m_announced_at.end() && now - at->second < m_options.heartbeat_ttl)
          live.push_back(worker);
      }
      std::erase_if(m_announced_at, [&](const auto& item) { return now - item.second >= m_options.heartbeat_ttl; });

      changed = set_live_locked(std::move(live));
      reroute_locked(to_drop);
      m_offers.expire(now);
      fail_unsatisfiable_locked(to_drop);
      if (m_counters.workers_alive == 0) fail_waiting_locked(now, to_drop);

      // The streams live on while this manager does; a class unused for a minute goes.
      std::set<const ClassStream*> in_use;
      for (const auto& [attempt, task] : m_attempts) in_use.insert(task->home.get());
      if (m_setup_count > 0)
        m_client->send(Role::commands, {"PEXPIRE", m_keys.setups(m_id), std::to_string(results_expiry_ms())}, ignore);
      m_streams.renew(*m_client, results_expiry_ms(), in_use, now, std::chrono::minutes(1));

      // Orders for a worker that is gone now will never be taken.
      for (auto at = m_orders.begin(); at != m_orders.end();) {
        const bool gone = std::none_of(m_live.begin(), m_live.end(),
                                       [&](const ClusterWorker& worker) { return worker.id == at->second.worker; });
        if (!gone) {
          ++at;
          continue;
        }
        orphaned.emplace_back(std::move(at->second.promise), at->second.worker);
        at = m_orders.erase(at);
      }
      match_locked(now);
    }
    for (auto& [promise, worker] : orphaned)
      promise.set_exception(
          std::make_exception_ptr(Error("scale::ClusterManager: worker " + worker + " left before it took the order")));
    if (changed) concurrency_changed();
    for (auto& warning : warnings) log_error(warning);
    drop_entries(to_drop);
    for (auto& id : cleanup) {
      m_client->send(Role::commands, {"HDEL", m_keys.workers(), id}, ignore);
      for (const auto& [stream, lines] : pending)
        m_client->send(Role::commands, {"XGROUP", "DELCONSUMER", stream->key, cluster_group, id}, ignore);
    }
  }

  /// This scan's part in the matching of managers to idle workers (cluster/matcher.hpp): what is
  /// queued per class (outstanding, and not held by a worker at this scan), the share served, the
  /// live workers. Under the lock, so no scan's demand reaches Redis after shutdown's leave().
  void match_locked(Clock::time_point now) {
    std::map<std::string, std::size_t> queued;
    for (const auto& [attempt, task] : m_attempts)
      if (task->entry.empty() || task->stream->taken.count(task->entry) == 0) ++queued[task->stream->name];
    std::set<std::string> live;
    for (const auto& worker : m_live)
      if (worker.compatible && !worker.draining) live.insert(worker.id);
    m_matcher->scan(std::move(queued), m_served.share(m_concurrency.load(), now), std::move(live));
  }

  /// No live compatible worker: tasks that have waited wait_for_workers fail.
  void fail_waiting_locked(Clock::time_point now, StreamEntries& to_drop) {
    std::vector<std::shared_ptr<Task>> expired;
    for (auto& [attempt, task] : m_attempts)
      if (now - std::max(m_last_live, task->queued_at) >= m_options.wait_for_workers) expired.push_back(task);
    if (expired.empty()) return;
    std::string message = "scale::ClusterManager: no worker took this chunk within " +
                          std::to_string(m_options.wait_for_workers.count()) +
                          " ms (ClusterOptions::wait_for_workers): start workers by running this same executable "
                          "with --scale-worker " +
                          m_url;
    std::size_t incompatible = 0;
    for (auto& worker : m_live)
      if (!worker.compatible) ++incompatible;
    if (incompatible > 0)
      message += "; " + std::to_string(incompatible) +
                 " connected worker(s) run a different build of the program (another fingerprint) and are given "
                 "none of its tasks: start them from this very executable";
    if (!m_redis_error.empty()) message += "; Redis could not be reached: " + m_redis_error;
    // Workers of another build are there but refused: that, not their absence, is what to fix.
    auto error = incompatible > 0 ? std::make_exception_ptr(BuildMismatch(message))
                                  : std::make_exception_ptr(NoWorkers(message));
    for (auto& task : expired) {
      retire_attempt_locked(*task, to_drop);
      task->chunk.job->cancel();
      finish_locked(*task, error);
    }
  }

  std::string m_url;
  ClusterOptions m_options;
  ClusterKeys m_keys;
  std::string m_id;
  std::string m_fingerprint;
  std::string m_results;

  mutable std::mutex m_mutex;
  std::atomic<bool> m_stopping{false};
  std::atomic<std::size_t> m_bulk_limit{redis_default_bulk_limit};
  std::uint64_t m_next_attempt = 0;
  ClassStreams m_streams;                                                // one per requirement class
  WorkerRoutes m_routes;                                                // the workers' own streams
  std::uint64_t m_routes_version = 0;  // changes with the workers chunks may be routed to
  WorkerOffers m_offers;                                                // what workers seen provide
  ServedTime m_served;                 // the worker time this manager had lately
  std::unique_ptr<Matcher> m_matcher;  // its part in the matching; made once m_client is
  std::uint64_t m_checked_offers = 0;  // the offers' version fail_unsatisfiable_locked last checked
  std::unordered_map<std::uint64_t, std::shared_ptr<Task>> m_attempts;  // outstanding, by attempt id
  std::vector<ClusterWorker> m_live;
  std::map<std::string, Clock::time_point> m_beat_at;  // each live worker's last heartbeat, as scans estimate it
  std::set<std::string> m_joined, m_lost, m_refused;
  std::set<std::string> m_left;                             // said they leave ("x")
  std::map<std::string, Clock::time_point> m_announced_at;  // "j" entries not yet in a scan
  std::map<std::uint64_t, PendingOrder> m_orders;           // sent, not yet taken
  std::size_t m_setup_count = 0;                            // setups added (their generation)
  std::map<std::string, std::exception_ptr> m_setup_failed;  // workers whose setup threw, with its exception
  std::exception_ptr m_setup_error;                         // the last of those
  std::uint64_t m_next_order = 0;
  std::atomic<std::size_t> m_concurrency{0};
  ShortChunkWindow m_window;  // of the chunks whose results came (core/short_chunks.hpp)
  std::function<void()> m_on_concurrency;
  Clock::time_point m_last_live;
  std::string m_redis_error;
  std::size_t m_late_results = 0;
  Completions m_completions;  // completed after unlocking
  TaskCounters m_counters;

  std::string m_last_result = "0";  // the reader's position (its own thread only)

  // NOTE: ~Cluster stops it (joins its I/O thread) before any member goes, so no callback runs on
  // a half-destroyed manager; callbacks that run while it stops find m_stopping set and return.
  std::unique_ptr<RedisClient> m_client;
};

}  // namespace scale::detail

namespace scale {

void ClusterManager::stop_call(const std::shared_ptr<detail::Job>& job) { m_cluster->stop_call(job); }

ClusterManager::ClusterManager(std::string redis_url, ClusterOptions options)
    : m_demand(
          std::make_shared<detail::ClusterDemand>(options.scaling, options.on_demand, [this] { return backlog(); })),
      m_cluster(std::make_shared<detail::Cluster>(std::move(redis_url), options)) {
  m_cluster->on_concurrency_changed([this] { concurrency_changed(); });
  m_cluster->start();
  m_demand->start(m_cluster->client(), m_cluster->keys(), m_cluster->fingerprint(), m_cluster->id(),
                  detail::ClusterDemand::refresh_interval(options.heartbeat_interval));
}

ClusterManager::~ClusterManager() {
  stop_reporting();  // first: the report reads workers() and stats()
  m_demand->stop();  // NOTE: first: its HDEL goes ahead of shutdown's, whose answer shutdown waits for
  m_cluster->shutdown();
}

Future<void> ClusterManager::submit(detail::Chunk chunk) { return m_cluster->submit(std::move(chunk)); }

std::size_t ClusterManager::concurrency() const noexcept { return std::max<std::size_t>(1, m_cluster->concurrency()); }

std::size_t ClusterManager::chunks_in_flight(std::size_t workers) const noexcept {
  return m_cluster->chunks_in_flight(workers);
}

Future<void> ClusterManager::drain(std::string worker_id) {
  detail::SentOrder order;
  order.drain = true;
  return m_cluster->order(worker_id, std::move(order), "drain");
}

Future<void> ClusterManager::order(std::string worker_id, WorkerOrder order) {
  if (order.threads && *order.threads == 0)
    return make_failed_future<void>(std::make_exception_ptr(
        Error("scale::ClusterManager::order: threads must be at least 1; to stop a worker, drain it")));
  if (order.provides) {
    // What --scale-provides would accept, and nothing its text form cannot carry.
    try {
      if (parse_provides(provides_text(*order.provides)) != *order.provides)
        throw std::invalid_argument("a name or value of WorkerOrder::provides holds ',' or '=' or spaces around it");
    } catch (const std::invalid_argument& error) {
      return make_failed_future<void>(std::make_exception_ptr(
          std::invalid_argument(std::string("scale::ClusterManager::order: ") + error.what())));
    }
  }
  detail::SentOrder sent;
  sent.threads = order.threads;
  sent.provides = std::move(order.provides);
  return m_cluster->order(worker_id, std::move(sent), "order");
}


ManagerStats ClusterManager::stats() const {
  ManagerStats stats = m_cluster->stats();
  stats.workers_target = desired_workers();
  return stats;
}

std::size_t ClusterManager::desired_workers() const noexcept { return m_demand->desired(); }

void ClusterManager::backlog_changed() { m_demand->backlog_changed(); }

std::vector<ClusterWorker> ClusterManager::workers() const { return m_cluster->workers(); }

std::vector<detail::ReportedWorker> ClusterManager::report_workers() const {
  std::vector<detail::ReportedWorker> reported;
  for (auto& worker : m_cluster->workers()) {
    detail::ReportedWorker entry;
    entry.id = std::move(worker.id);
    entry.host = std::move(worker.host);
    entry.site = std::move(worker.site);
    entry.pid = worker.pid;
    entry.concurrency = worker.concurrency;
    entry.heartbeat_age = worker.heartbeat_age;
    entry.draining = worker.draining;
    reported.push_back(std::move(entry));
  }
  return reported;
}

Future<void> ClusterManager::drain_for_order(std::string worker_id) { return drain(std::move(worker_id)); }

Future<std::vector<std::string>> ClusterManager::broadcast_targets() {
  return make_ready_future(m_cluster->broadcast_targets());
}

void ClusterManager::add_setup(std::shared_ptr<detail::Job> setup) { m_cluster->add_setup(setup); }

}  // namespace scale

