#pragma once
// Assignments: which idle worker serves which manager first, decided at each scan by the manager
// that holds the matcher's lease (cluster/matcher.hpp) from what every manager of the build
// publishes (its demand, in the hash <tag>:demand:<fingerprint>) and what the idle workers
// announce (their heartbeat records, cluster/worker_record.hpp). Encoded, decoded and computed
// here alone, as pure functions, so a test can give them any cluster.
//
// Why it looks like this:
//   - A manager's demand is what it has queued per requirement class (chunks in its streams that
//     no worker has taken), its host and site, and the share of worker time it had lately
//     (cluster/served_time.hpp): exactly what detail::path_rankings needs, and nothing per chunk.
//   - A worker can serve a manager when its provides meet the requirement of a class that manager
//     has queued work in; the requirement comes from the build's directory
//     (cluster/class_directory.hpp), which every worker reads already, so the demand carries
//     class names only.
//   - The matching itself is detail::stable_match over detail::path_rankings
//     (core/stable_match.hpp): same host, then same site, then the rest; ties by share. It is not
//     redone here.
//   - A manager's capacity is what it has queued, capped at an even share of the idle workers
//     (what one manager wants less of goes to the others; an odd one to the manager served
//     less). Without the cap the share tie-break alone would hand every idle worker to the
//     manager served less, scan after scan, until the shares crossed: with a scan a second that
//     swung a late-comer to ~70% of the worker time (bench/cluster_fairness), not the even split
//     the workers' round robin gives. With it, each scan splits the idle workers evenly, and the
//     paths decide which worker goes where.
//   - A worker's assignment is kept only when its manager is nearer (same host, or same site) than
//     another waiting manager it could serve. Among equally near managers the worker's own round
//     robin serves each in turn, chunk by chunk; an assignment would favour one of them for two
//     scans at a time, and a worker shared by two managers would serve them in bursts. So on one
//     host, or with no sites, the matcher writes nothing and the workers rotate as before.
//   - With fewer than two managers waiting there is nobody to choose between: nothing is
//     assigned, and the workers serve that one manager as they would without a matcher.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <scale/provides.hpp>

#include "cluster/class_directory.hpp"

namespace scale::detail {

/// One manager's field in <tag>:demand:<fingerprint>.
struct ManagerDemand {
  std::string host;                           ///< where the manager runs (gethostname)
  std::string site;                           ///< ClusterOptions::site; "" for none
  std::map<std::string, std::size_t> queued;  ///< class name → chunks queued, not yet taken by a worker
  double share = 0;                           ///< the fraction of worker time it had lately; >= 0
  std::uint64_t writes = 0;                   ///< bumped at every write: a field that stops moving is a dead manager's

  /// Every class's queued chunks.
  std::size_t total() const noexcept;
};

std::string encode_manager_demand(const ManagerDemand& demand);
/// The field, or nothing when `text` is not one.
std::optional<ManagerDemand> decode_manager_demand(const std::string& text);

/// An idle worker of the build, as its heartbeat record says.
struct IdleWorker {
  std::string id;
  std::string host;
  std::string site;
  Provides provides;
};

/// Worker id → the id of the manager it serves first: the stable matching of `workers` to the
/// managers of `demands` with queued work, ranked by path and share (core/stable_match.hpp), each
/// manager taking at most an even share of the workers (more when others want less); only workers
/// nearer their manager than another waiting one they could serve are listed.
/// `directory` gives each manager's classes (a class missing there is served by no one, save
/// "any", which needs nothing). Empty with fewer than two managers waiting. Deterministic: the
/// same input gives the same assignment in any process.
std::map<std::string, std::string> assign_idle_workers(const std::map<std::string, ManagerDemand>& demands,
                                                       const std::map<std::string, ManagerClasses>& directory,
                                                       const std::vector<IdleWorker>& workers);

}  // namespace scale::detail
