#pragma once
// The entry of a cluster worker (src/cluster/worker.cpp): a process started with
// `--scale-worker redis://...` joins the ClusterManagers of that Redis, runs the task payloads of
// its build from their stream (remote/task_payload.hpp) and sends back the results.

#include <string>

namespace scale::detail {

/// The flags of a cluster worker: `--scale-worker URL` (or `--scale-worker=URL`) and
/// `--scale-heartbeat-ms N`.
inline constexpr const char* cluster_worker_flag = "--scale-worker";
inline constexpr const char* heartbeat_flag = "--scale-heartbeat-ms";

/// Serves a ClusterManager through the Redis at `url` until SIGTERM or SIGINT, finishing the
/// chunk it runs, then exits the process with status 0.
[[noreturn]] void serve_cluster_worker(const std::string& url, int heartbeat_ms);

}  // namespace scale::detail
