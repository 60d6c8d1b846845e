#pragma once
// ClassStreams: a ClusterManager's task streams, one per requirement class
// (<tag>:tasks:<fingerprint>:<class>:<manager>, src/cluster/keys.hpp), and its field in the
// build's directory <tag>:classes:<fingerprint> (cluster/class_directory.hpp), which says which
// streams it keeps, what each one's chunks need, and the manager's site.
//
// Why it looks like this:
//   - The stream of calls that need nothing ("any") is made when the manager starts, so a chunk
//     of such a call costs what it always did: one XADD to a stream named once.
//   - Another class's stream is made when its first chunk comes: its group is created (MKSTREAM)
//     and the directory written before the chunk's XADD, all on the manager's one commands
//     connection, so a worker that finds the class in the directory finds its group too.
//   - The same requirement chunk after chunk is recognised by comparing it with the last one, so
//     its class name (a hash of its text) is computed once per call, not per chunk.
//   - A class not used for a while (nothing of it outstanding, the last chunk a minute ago) is
//     dropped, stream and directory entry, so workers do not read a growing list of empty streams.
//   - The streams expire unless renewed (every scan), and at each renewal now and then the manager
//     removes the directory fields of managers whose result stream has expired: a manager killed
//     with kill -9 leaves nothing behind for long.
//   - Shards (?shards=N, N > 1; src/cluster/keys.hpp): each class has N streams, one per shard
//     tag, each a ClassStream of its own (its own entries, attempts and pending lines: an entry
//     id is unique within one stream only). any() and of() hand out a class's streams in turn,
//     one chunk each, so a single map, the case that needs the spread most, keeps every shard
//     and so every Redis Cluster node busy; a chunk run again stays on the stream it was first
//     given. Per class, not per manager: each class's chunks are spread evenly on their own.
//     With one shard the turn is a test and an increment, and the layout is as before.
//   - Not thread safe: the manager calls it under its lock.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <scale/detail/requirement.hpp>

#include "cluster/keys.hpp"
#include "redis/redis_client.hpp"

namespace scale::detail {

/// One class's stream (with shards: one of its streams, on one shard).
struct ClassStream {
  std::string name;  ///< the class name ("any", or a hash of requirement.text())
  std::string key;   ///< the stream's key
  Requirement requirement;
  // The manager's, under its lock:
  /// Whether the offers of WorkerOffers::version() `met_version` can meet it.
  std::uint64_t met_version = 0;
  bool met = true;
  std::unordered_map<std::string, std::uint64_t> attempts;  ///< entry id → attempt id, while outstanding
  std::set<std::string> taken;                              ///< entries a worker held at the last scan
};

class ClassStreams {
 public:
  using Clock = std::chrono::steady_clock;

  ClassStreams(ClusterKeys keys, std::string fingerprint, std::string manager, std::string site);

  /// The stream for the next chunk of calls that need nothing (with shards: the next shard's).
  const std::shared_ptr<ClassStream>& any() noexcept { return m_any.next(); }
  /// The stream for the next chunk of `requirement`'s class (not empty; with shards: the next
  /// shard's), its streams made on its first use.
  const std::shared_ptr<ClassStream>& of(RedisClient& client, const Requirement& requirement, Clock::time_point now);
  /// Every stream, "any"'s first.
  std::vector<std::shared_ptr<ClassStream>> all() const;

  /// Creates every stream's group (idempotently, with MKSTREAM) and writes the directory field:
  /// when the manager starts, and after Redis lost its data.
  void prepare(RedisClient& client);
  /// At every scan: the streams' and the directory's TTLs renewed, the classes in none of
  /// `in_use` and unused for `idle` dropped, and now and then gone managers' fields removed.
  void renew(RedisClient& client, std::int64_t ttl_ms, const std::set<const ClassStream*>& in_use,
             Clock::time_point now, Clock::duration idle);
  /// Deletes every stream and this manager's directory field (the manager goes).
  void remove_all(RedisClient& client);

 private:
  /// One class's streams, one per shard, handed out in turn.
  struct Shards {
    std::vector<std::shared_ptr<ClassStream>> streams;
    std::size_t turn = 0;
    Clock::time_point last_used{};
    const std::shared_ptr<ClassStream>& next() noexcept {
      const std::shared_ptr<ClassStream>& stream = streams[turn];
      if (++turn == streams.size()) turn = 0;
      return stream;
    }
  };

  Shards make(const std::string& name, const Requirement& requirement) const;
  void create_group(RedisClient& client, const ClassStream& stream) const;
  void publish(RedisClient& client) const;
  void forget_gone_managers(RedisClient& client) const;

  ClusterKeys m_keys;
  std::string m_fingerprint;
  std::string m_manager;
  std::string m_site;
  std::string m_directory;  // <tag>:classes:<fingerprint>
  Shards m_any;
  std::map<std::string, Shards> m_classes;  // by name, "any" excepted
  Shards* m_last = nullptr;                 // the class of() handed out last
  unsigned m_renewals = 0;
};

}  // namespace scale::detail
