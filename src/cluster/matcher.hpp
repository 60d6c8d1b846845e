#pragma once
// Matcher: a ClusterManager's part in deciding which idle workers serve which manager first when
// several managers of one build share workers (docs/routing.md, "Fair shares and sites").
//
// At every scan of its manager (on the manager's Redis client thread), it:
//   1. writes the manager's demand (cluster/assignment.hpp) into its field of
//      <tag>:demand:<fingerprint>: what it has queued per class, its host, site and share;
//   2. takes or renews the lease <tag>:matcher (SET NX PX 3000, renewed by a script that first
//      checks that this manager still holds it);
//   3. as the lease's holder only: reads every manager's demand, and if two or more wait, the
//      workers' records and the build's directory; runs assign_idle_workers (a stable matching,
//      core/stable_match.hpp) over the idle live workers; and writes the assignment of each
//      matched worker that it brings nearer its manager (cluster/assignment.hpp),
//      <tag>:assignment:<worker> = manager id, with a TTL of two scans.
// A worker reads its assignment at every heartbeat and reads that manager's streams first
// (ChunkReader::prefer); with none, or with those streams empty, it rotates as before.
//
// Why it works this way:
//   - One matcher at a time, so every worker gets one answer per scan, and no manager's view of
//     the others needs to agree with anyone else's. A lease, not an election: the holder renews
//     it at every scan (the scan period is at most 1 s, well inside 3 s), and when it dies (kill
//     -9, a lost host) the key lapses and the next manager to scan takes it. A manager that is
//     destroyed releases it at once (a script deletes it only if it is still the holder's).
//   - Assignments expire after two scans, so a holder that dies leaves nothing behind for long:
//     its workers fall back to round robin, and the next holder writes fresh ones. Nothing is
//     ever deleted by hand.
//   - A manager's demand field carries a counter it bumps at every write; the holder ignores (and
//     removes) a field whose counter has not moved for a lease's length by its own clock (every
//     manager writes at least every second), so a killed manager stops attracting workers within
//     seconds, without comparing clocks across hosts.
//   - With one manager waiting (the common case) the holder reads the demand hash only: no
//     worker record or directory is read, and no assignment written. Nothing here runs per chunk.
//   - Idle is what the worker's heartbeat says: it ran fewer chunks than its concurrency at some
//     moment since its previous beat (WorkerRecord::running), so a worker between two short
//     chunks counts, and one busy with a long chunk does not.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster/assignment.hpp"
#include "cluster/keys.hpp"
#include "redis/redis_client.hpp"

namespace scale::detail {

class Matcher {
 public:
  /// The lease's length: three scans of the slowest manager (scans come at most every second).
  static constexpr std::chrono::milliseconds lease{3000};
  /// How long the demand hash outlives the last write of any manager.
  static constexpr std::chrono::milliseconds demand_ttl{60'000};

  /// For the manager `manager` of build `fingerprint`, which runs on `host` at `site` and scans
  /// every `scan_period`. `client` must outlive every callback (the manager stops it first).
  Matcher(RedisClient& client, ClusterKeys keys, std::string fingerprint, std::string manager, std::string host,
          std::string site, std::chrono::milliseconds scan_period);

  Matcher(const Matcher&) = delete;
  Matcher& operator=(const Matcher&) = delete;

  /// One scan (the client's I/O thread): `queued` per class and `share` are this manager's demand,
  /// `live` the ids of the live workers the manager's scan found.
  void scan(std::map<std::string, std::size_t> queued, double share, std::set<std::string> live);

  /// The manager goes: its demand field is removed and the lease released if it holds it. Sent on
  /// the commands connection, so a later command's answer comes after theirs. Any thread.
  void leave();

 private:
  void lease_answered(bool held, std::shared_ptr<const std::set<std::string>> live);
  void demands_read(const RedisReply& fields, std::shared_ptr<const std::set<std::string>> live);
  void match(const std::map<std::string, ManagerDemand>& demands, const RedisReply& registry,
             const RedisReply& directory, const std::set<std::string>& live);

  RedisClient& m_client;
  const ClusterKeys m_keys;
  const std::string m_fingerprint;
  const std::string m_manager;
  const std::chrono::milliseconds m_period;
  const std::string m_demand_key;

  // The client's I/O thread's.
  ManagerDemand m_demand;
  std::uint64_t m_writes = 0;  // this manager's counter in its demand field
  /// Other managers' counters as this holder last saw them, and when they last moved.
  struct Seen {
    std::uint64_t writes = 0;
    std::chrono::steady_clock::time_point moved_at{};
  };
  std::map<std::string, Seen> m_seen;
  std::atomic<bool> m_left{false};  // leave() was called: nothing more is written
};

}  // namespace scale::detail
