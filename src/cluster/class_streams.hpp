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
//   - Not thread safe: the manager calls it under its lock.

#include <chrono>
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

/// One class's stream.
struct ClassStream {
  std::string name;  ///< the class name ("any", or a hash of requirement.text())
  std::string key;   ///< the stream's key
  Requirement requirement;
  std::chrono::steady_clock::time_point last_used{};
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

  /// The stream of calls that need nothing.
  const std::shared_ptr<ClassStream>& any() const noexcept { return m_any; }
  /// The stream of `requirement`'s class (not empty), made on its first use.
  const std::shared_ptr<ClassStream>& of(RedisClient& client, const Requirement& requirement, Clock::time_point now);
  /// Every stream, "any" first.
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
  std::shared_ptr<ClassStream> make(const std::string& name, Requirement requirement) const;
  void create_group(RedisClient& client, const ClassStream& stream) const;
  void publish(RedisClient& client) const;
  void forget_gone_managers(RedisClient& client) const;

  ClusterKeys m_keys;
  std::string m_fingerprint;
  std::string m_manager;
  std::string m_site;
  std::string m_directory;  // <tag>:classes:<fingerprint>
  std::shared_ptr<ClassStream> m_any;
  std::map<std::string, std::shared_ptr<ClassStream>> m_classes;  // by name, "any" excepted
  std::shared_ptr<ClassStream> m_last;                             // the one of() returned last
  unsigned m_renewals = 0;
};

}  // namespace scale::detail
