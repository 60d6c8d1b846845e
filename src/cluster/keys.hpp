#pragma once
// What a ClusterManager (src/cluster/manager.cpp) and its workers (src/cluster/worker.cpp) agree on in
// Redis. Every key sits under one hash tag, "{scale}" (or "{scale:N}" with ?namespace=N in the
// URL), so a Redis Cluster node can hold them all; with ?shards=N (N > 1) the task streams alone
// move to N shard tags (below), so the queue can spread over N Redis Cluster nodes:
//
//   <tag>:tasks:<fingerprint>:<class>:<manager>
//   <shard>:tasks:<fingerprint>:<class>:<manager>   (with ?shards=N, N > 1)
//                              a Stream of one manager's chunks of one requirement class for
//                              workers of that build (class: "any" for chunks that need nothing,
//                              else a hash of the Requirement's text; cluster/class_directory.hpp),
//                              read by the consumer group "workers", which its manager creates
//                              (MKSTREAM) before it names the stream in <tag>:classes. A stream of
//                              its own per class and manager, so one class never waits behind
//                              another, and workers rotate over managers and classes. Entry
//                              fields: m (manager id), a (attempt id), g (the call's
//                              RunOptions::grace in ms, for a --scale-processes worker's own
//                              pool), p (task payload, remote/task_payload.hpp). A stopped call's
//                              entries are deleted (XDEL) and acknowledged (XACK) by its manager,
//                              so no worker reads them later and nothing of it stays pending
//                              (XPENDING names the worker that read one before, which is told).
//                              The manager renews its streams' TTL at every scan and deletes them
//                              when it goes, so a killed manager's streams expire.
//                              Shards (cluster/class_streams.hpp, cluster/chunk_reader.hpp): with
//                              ?shards=N, N > 1, each class has N streams, one under each shard tag
//                              <shard> = "{<namespace>#s<i>}", i = 0..N-1, where <namespace> is
//                              the main tag's text ("scale", or "scale:N"): {scale#s0}, {scale#s1}...
//                              A namespace may not hold '#', so no main tag is ever a shard tag.
//                              The manager puts its chunks of a class on its N streams in turn,
//                              one chunk each (so one map keeps every shard busy); the manager
//                              publishes N in its directory field, and workers read each
//                              manager's streams as that field says. With N = 1 (the default)
//                              the one stream is under <tag>, as it always was. Only the task
//                              streams move: they carry four commands per chunk (XADD, XREADGROUP,
//                              XACK, XDEL); the rest stays under <tag>, where the commands that
//                              must see it together (a worker's record and heartbeat, a
//                              manager's results and its directory field) keep one node
//   <tag>:classes:<fingerprint> a Hash: manager id → JSON {site (ClusterOptions::site), classes:
//                              {class: {text, resources, labels}}, shards (its ?shards=N; only
//                              when N > 1)}: the streams each manager of the
//                              build keeps, with the requirement of each, which workers read at
//                              every heartbeat (and when idle) to know what they can serve
//                              (cluster/class_directory.hpp)
//   <tag>:results:<manager>    a Stream for one manager, read with XREAD BLOCK, so whatever a
//                              worker adds wakes the manager at once. Fields: k (the kind), w (the
//                              worker id), then by kind:
//                                "r" results, "e" an encoded exception: a (attempt id), p, and
//                                    t (the microseconds the worker ran the chunk)
//                                "l" the chunk killed the process that ran it on a worker with
//                                    --scale-processes: a (attempt id), p (the encoded WorkerLost
//                                    of that death: its status and its crash capsule, whose
//                                    item_index is within the chunk); the manager reruns it as
//                                    a lost chunk, the worker stays
//                                "j" a worker joined (its first heartbeat), "x" it leaves (a
//                                    drain, SIGTERM): p (its registry JSON, below)
//                                "o" a worker took an order: a (the order id)
//                                "b" a worker gives back a chunk it read but cannot run now (its
//                                    amounts or slots were taken meanwhile): a (attempt id); the
//                                    manager queues it again, not counted as a retry
//                                "f" a setup of this manager threw on the worker: p (the encoded
//                                    exception); the worker takes none of this manager's chunks
//                                    from then on (it gives back, "b", any it read)
//                                "g" a running chunk's progress: a (attempt id), p (the items of
//                                    the chunk done, the running item's fraction included, in
//                                    Job::progress_units: millionths of an item, decimal); at most
//                                    one per running chunk every 50 ms, only when it moved
//   <tag>:workers              a Hash: worker id → JSON {host, pid, fingerprint, ttl_ms,
//                              concurrency (chunks it runs at once), draining, processes (runs
//                              chunks on child processes: --scale-processes), provides {name: value},
//                              site (--scale-site), running (the fewest chunks it ran at once since
//                              its previous heartbeat), rtt_us (its smoothed round trip to Redis)}
//   <tag>:heartbeat:<worker>   a key whose TTL the worker renews; gone means the worker is lost
//   <tag>:orders:<worker>      a List of orders for one worker (RPUSH by any manager of its build,
//                              LPOP by the worker at every heartbeat; expires with the worker):
//                              JSON {id, m (manager id), fingerprint, drain: true | threads: n,
//                              provides: {name: value} | stop: [chunk keys] | abandon: [chunk keys]}.
//                              A chunk key names a task entry and its stream (chunk_key below).
//                              stop: the calls of those task entries (read by this worker) were
//                              stopped: their chunks see Scope::stop_requested(); abandon: the
//                              manager stopped waiting for them after the grace (a
//                              --scale-processes worker's pool kills the child running one; a
//                              --scale-threads worker cannot stop a thread, says so and drains).
//                              No "o" answers a stop or abandon (id 0)
//   <tag>:worker:<worker>:tasks a Stream of the chunks for that one worker (src/cluster/worker_stream.hpp):
//                              keyed chunks (the worker their key's rendezvous picks), pinned ones
//                              (broadcast) and the setups' chunks, from any manager of its build,
//                              read by the group "workers" (the worker alone) before its class
//                              streams. The worker creates it (MKSTREAM) before its first heartbeat,
//                              renews its TTL with the heartbeat and deletes it when it leaves; a
//                              manager that finds the worker lost deletes it too, and queues its own
//                              chunks from it elsewhere. Managers add with NOMKSTREAM, so a gone
//                              worker's stream is not made again. Fields: those of a class stream,
//                              plus n (the resources the call's chunks hold, "name=amount;...",
//                              only when it has some)
//   <tag>:setups:<manager>     a List of the manager's setups (on_every_worker), each a task payload
//                              of one item, in the order added; its length is the setups'
//                              generation. Every task entry of a manager with setups carries s (the
//                              generation when it was queued): a worker runs the setups it has not
//                              run up to s before it runs the chunk. Expires with the manager
//   <tag>:managers             a Hash: manager id → its fingerprint (so a worker can say why it
//                              is given nothing, and whom to announce itself to)
//   <tag>:desired:<fingerprint> a Hash: manager id → the worker count it wants (desired_workers());
//                              the sum is what the build wants (src/cluster/demand.hpp)
//   <tag>:demand:<fingerprint> a Hash: manager id → JSON {host, site, queued: {class: chunks queued
//                              and not taken}, share (of worker time lately)}, written by each
//                              manager at every scan for the matcher (cluster/assignment.hpp);
//                              expires a minute after the last write, and a manager deletes its
//                              field when it goes
//   <tag>:matcher              a string: the id of the manager that runs the matching, a lease
//                              (SET NX PX 3000, renewed at every scan by its holder only;
//                              cluster/matcher.hpp)
//   <tag>:assignment:<worker>  a string: the id of the manager the worker serves first, written by
//                              the matcher's holder with a TTL of two scans and read by the worker
//                              at every heartbeat (cluster/assignment.hpp)

#include <cstddef>
#include <exception>
#include <string>

#include "redis/redis_client.hpp"
#include <scale/error.hpp>

namespace scale::detail {

inline constexpr const char* cluster_group = "workers";

/// The most shards a URL may ask for: a worker reads every shard it is not blocked on in turn
/// when idle, so more than there are nodes in any Redis Cluster only adds round trips.
inline constexpr std::size_t max_shards = 1024;

struct ClusterKeys {
  std::string tag = "{scale}";
  /// ?shards=N: how many shard tags this process's task streams are spread over (1: all under tag).
  std::size_t shards = 1;

  /// Shard `shard`'s tag for a manager with `count` shards: the main tag when `count` is 1.
  std::string shard_tag(std::size_t shard, std::size_t count) const {
    if (count <= 1) return tag;
    return tag.substr(0, tag.size() - 1) + "#s" + std::to_string(shard) + "}";
  }
  /// A task stream on shard `shard` of `count` (keys.hpp's table; count 1: under the main tag).
  std::string tasks(const std::string& fingerprint, const std::string& route_class, const std::string& manager,
                    std::size_t shard = 0, std::size_t count = 1) const {
    return shard_tag(shard, count) + ":tasks:" + fingerprint + ":" + route_class + ":" + manager;
  }
  std::string classes(const std::string& fingerprint) const { return tag + ":classes:" + fingerprint; }
  std::string results(const std::string& manager) const { return tag + ":results:" + manager; }
  std::string workers() const { return tag + ":workers"; }
  std::string heartbeat(const std::string& worker) const { return tag + ":heartbeat:" + worker; }
  std::string managers() const { return tag + ":managers"; }
  std::string desired(const std::string& fingerprint) const { return tag + ":desired:" + fingerprint; }
  std::string orders(const std::string& worker) const { return tag + ":orders:" + worker; }
  std::string worker_tasks(const std::string& worker) const { return tag + ":worker:" + worker + ":tasks"; }
  std::string setups(const std::string& manager) const { return tag + ":setups:" + manager; }
  std::string demand(const std::string& fingerprint) const { return tag + ":demand:" + fingerprint; }
  std::string matcher() const { return tag + ":matcher"; }
  std::string assignment(const std::string& worker) const { return tag + ":assignment:" + worker; }
};

/// The URL as given, its options included (the password never is).
inline std::string url_with_options(const RedisUrl& url) {
  std::string text = url.text;
  for (std::size_t i = 0; i < url.query.size(); ++i)
    text += (i == 0 ? "?" : "&") + url.query[i].first + "=" + url.query[i].second;
  return text;
}

/// The keys for a redis:// URL; `who` names the caller in the error for a bad or unknown option.
inline ClusterKeys cluster_keys(const RedisUrl& url, const std::string& who) {
  ClusterKeys keys;
  auto bad = [&](const std::string& why) { return Error(who + "(\"" + url_with_options(url) + "\"): " + why); };
  for (const auto& [name, value] : url.query) {
    if (name == "namespace" && !value.empty()) {
      if (value.find('#') != std::string::npos)
        throw bad("?namespace=" + value + " holds '#', which shard tags use ({scale:N#s0}...); pick a namespace without it");
      keys.tag = "{scale:" + value + "}";
    } else if (name == "shards") {
      const bool digits = !value.empty() && value.size() <= 4 &&
                          value.find_first_not_of("0123456789") == std::string::npos;
      const std::size_t count = digits ? std::stoul(value) : 0;
      if (count < 1 || count > max_shards)
        throw bad("?shards=" + value + " is not a whole number from 1 to " + std::to_string(max_shards) +
                  " (the hash tags the task streams are spread over; give the number of Redis Cluster nodes, or "
                  "leave it out for 1)");
      keys.shards = count;
    } else {
      throw bad("unknown URL option '" + name + "'; the options are namespace and shards");
    }
  }
  return keys;
}

/// The largest string Redis accepts in a command by default (its proto-max-bulk-len). A larger
/// one makes Redis close the connection, so each side checks sizes before sending.
inline constexpr std::size_t redis_default_bulk_limit = std::size_t{512} << 20;
/// Room kept below the limit for the other arguments of a command.
inline constexpr std::size_t redis_bulk_margin = 4096;

/// proto-max-bulk-len from a CONFIG GET reply ([name, value]), or the default (CONFIG may be
/// disabled on a managed Redis).
inline std::size_t bulk_limit_of(const RedisReply& reply) {
  if (reply.elements.size() != 2) return redis_default_bulk_limit;
  try {
    const auto value = std::stoull(reply.elements[1].str);
    return value > redis_bulk_margin ? static_cast<std::size_t>(value) : redis_default_bulk_limit;
  } catch (const std::exception&) {
    return redis_default_bulk_limit;
  }
}

/// A task entry by its id and stream: entry ids are unique within one stream only.
inline std::string chunk_key(const std::string& stream, const std::string& entry) { return entry + "@" + stream; }

/// "host:pid:random", unique among the processes that share a Redis.
std::string cluster_member_id();

}  // namespace scale::detail
