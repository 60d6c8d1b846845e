#pragma once
// WorkerRoutes: where a ClusterManager sends a chunk meant for one worker (a keyed call's chunk,
// one pinned by broadcast): that worker's own stream, <tag>:worker:<id>:tasks
// (cluster/worker_stream.hpp), and, for a keyed chunk, which worker its key goes to.
//
// Why it looks like this:
//   - A worker's stream is a ClassStream to the manager (its attempts by entry, what the worker
//     held at the last scan) with no requirement of its own, so the manager's bookkeeping for
//     stops, withdrawals, scans and lost workers serves it unchanged.
//   - A key goes to rendezvous_pick(key, ids) (src/core/rendezvous.hpp) over the ids of the workers
//     that may run the call's chunks now: live, of this build, not draining, not lost or gone, whose
//     setups did not throw, and whose provides meet the call's requirement. When one of them goes,
//     only its keys move (each to its next choice); when one comes, only the keys it now wins.
//   - Those ids are computed once per change of the live workers and per requirement, not per
//     chunk: a keyed chunk costs one rendezvous pick over them.
//   - Not thread safe: the manager calls it under its lock.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/class_streams.hpp"
#include "cluster/keys.hpp"

namespace scale::detail {

class WorkerRoutes {
 public:
  explicit WorkerRoutes(ClusterKeys keys) : m_keys(std::move(keys)) {}

  /// Worker `id`'s stream, made (as the manager's record of it) on first use.
  const std::shared_ptr<ClassStream>& stream(const std::string& id);
  /// The worker whose stream `stream` is, or null for a class stream.
  const std::string* worker_of(const ClassStream& stream) const;
  /// Every worker stream this manager has a record of.
  std::vector<std::shared_ptr<ClassStream>> all() const;
  /// Whether no chunk was ever routed to a worker (or every record was forgotten since).
  bool empty() const noexcept { return m_streams.empty(); }
  /// Drops the record of worker `id`'s stream (the worker is gone and nothing of it is outstanding).
  void forget(const std::string& id);

  /// The workers that may run a keyed chunk of the class `home` (sorted ids), from `eligible`
  /// (called with its requirement when they are not known for this version). `version` changes
  /// whenever the manager's view of the workers does.
  const std::vector<std::string>& targets(const ClassStream& home, std::uint64_t version,
                                          const std::function<std::vector<std::string>(const Requirement&)>& eligible);

  /// The worker of `targets` (not empty) that `key` goes to.
  static const std::string& pick(std::string_view key, const std::vector<std::string>& targets);

 private:
  ClusterKeys m_keys;
  std::map<std::string, std::shared_ptr<ClassStream>> m_streams;  // by worker id
  std::map<const ClassStream*, std::string> m_worker_of;
  std::uint64_t m_version = 0;
  std::map<const ClassStream*, std::vector<std::string>> m_targets;  // by class, for m_version
};

}  // namespace scale::detail
