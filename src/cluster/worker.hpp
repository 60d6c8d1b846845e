#pragma once
// The entry of a cluster worker (src/cluster/worker.cpp): a process started with
// `--scale-worker redis://...` joins the ClusterManagers of that Redis, runs the task payloads of
// its build from their stream (remote/task_payload.hpp) and sends back the results.

#include "cluster/worker_options.hpp"

namespace scale::detail {

/// Serves the ClusterManagers of the Redis at `options.url` until SIGTERM, SIGINT or a drain
/// order, finishing and delivering the chunks it holds, then exits the process with status 0.
[[noreturn]] void serve_cluster_worker(const ClusterWorkerOptions& options);

}  // namespace scale::detail
