#pragma once
// What a cluster worker is started with: `--scale-worker URL` joins the ClusterManagers of that
// Redis; `--scale-heartbeat-ms N` sets its heartbeat; `--scale-threads N` runs N chunks at once on
// threads of its own (1 by default), or `--scale-processes N` on a process pool of N children of
// its own (a chunk that kills its child then costs the child, not the worker);
// `--scale-provides gpu=2,site=eu-1` says what it offers to calls that need resources or labels
// (scale::parse_provides reads it); `--scale-site NAME` says where it runs, and also provides the
// label site=NAME (so a call's labels can ask for a site without the worker saying it twice). The
// Runtime finds the flags (src/core/runtime.cpp); their values are checked here.

#include <cstddef>
#include <optional>
#include <string>

#include <scale/provides.hpp>

namespace scale::detail {

inline constexpr const char* cluster_worker_flag = "--scale-worker";
inline constexpr const char* heartbeat_flag = "--scale-heartbeat-ms";
inline constexpr const char* worker_threads_flag = "--scale-threads";
inline constexpr const char* worker_processes_flag = "--scale-processes";
inline constexpr const char* worker_provides_flag = "--scale-provides";
inline constexpr const char* worker_site_flag = "--scale-site";

/// How a cluster worker serves.
struct ClusterWorkerOptions {
  std::string url;
  int heartbeat_ms = 1000;
  std::size_t concurrency = 1;  ///< chunks at once: threads, or child processes with `processes`
  bool processes = false;       ///< chunks run on a ProcessPoolManager of the worker's own
  Provides provides;            ///< what it offers (site=<site> included when a site is given)
  std::string site;             ///< where it runs; "" when not given
};

/// The cluster worker's flags as written on the command line (nullopt: not given).
struct ClusterWorkerFlags {
  std::string url;
  int heartbeat_ms = 1000;
  std::optional<std::string> threads, processes, provides, site;
};

/// The line printed (to stderr, before exit status 2) for a bad cluster worker flag.
std::string cluster_worker_usage();

/// The options from the flags' values. A --scale-threads or --scale-processes value that is not
/// a whole number from 1 to 4096, both of them at once, a --scale-provides entry that
/// scale::parse_provides refuses, or a --scale-site that another site=... in --scale-provides
/// contradicts, prints what is wrong and the usage line to stderr and exits the process with
/// status 2: a worker started wrongly must not join.
ClusterWorkerOptions cluster_worker_options(const ClusterWorkerFlags& flags);

}  // namespace scale::detail
