#pragma once
// What a cluster worker is started with: `--scale-worker URL` joins the ClusterManagers of that
// Redis; `--scale-heartbeat-ms N` sets its heartbeat; `--scale-threads N` runs N chunks at once on
// threads of its own (1 by default), or `--scale-processes N` on a process pool of N children of
// its own (a chunk that kills its child then costs the child, not the worker). The Runtime finds
// the flags (src/core/runtime.cpp); their values are checked here.

#include <cstddef>
#include <optional>
#include <string>

namespace scale::detail {

inline constexpr const char* cluster_worker_flag = "--scale-worker";
inline constexpr const char* heartbeat_flag = "--scale-heartbeat-ms";
inline constexpr const char* worker_threads_flag = "--scale-threads";
inline constexpr const char* worker_processes_flag = "--scale-processes";

/// How a cluster worker serves.
struct ClusterWorkerOptions {
  std::string url;
  int heartbeat_ms = 1000;
  std::size_t concurrency = 1;  ///< chunks at once: threads, or child processes with `processes`
  bool processes = false;       ///< chunks run on a ProcessPoolManager of the worker's own
};

/// The line printed (to stderr, before exit status 2) for a bad --scale-threads or --scale-processes.
std::string cluster_worker_usage();

/// The options from the flags' values as written (nullopt: not given). A value that is not a
/// whole number from 1 to 4096, or both flags at once, prints what is wrong and the usage line to
/// stderr and exits the process with status 2: a worker started wrongly must not join.
ClusterWorkerOptions cluster_worker_options(std::string url, int heartbeat_ms,
                                            const std::optional<std::string>& threads,
                                            const std::optional<std::string>& processes);

}  // namespace scale::detail
