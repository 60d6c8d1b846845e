#pragma once
// One worker as a manager's report lists it (ScalabilityManager::report_workers, report_to):
// the "workers" entries of the payload on `_scale/managers`. A plain struct filled by each manager
// from what it already keeps (its threads, its children, the cluster's heartbeats), so the report
// itself knows no tier.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

namespace scale::detail {

struct ReportedWorker {
  std::string id;              ///< WorkerResult::worker's form: "inline", "thread-<k>", "child-<k>", a cluster id
  std::string host;            ///< the host it runs on; empty: this one (the report fills it in)
  std::string site;            ///< its --scale-site (cluster), "" otherwise
  int pid = 0;                 ///< its process id on that host; 0: this process (filled in likewise)
  std::size_t concurrency = 1; ///< chunks it runs at once
  /// Since its last heartbeat (cluster); none where workers have no heartbeat.
  std::optional<std::chrono::milliseconds> heartbeat_age;
  bool draining = false;       ///< finishing what it holds, then it leaves; given nothing more
};

}  // namespace scale::detail
