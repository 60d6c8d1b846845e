#pragma once
// The worker side of the process pool, and the protocol both sides share (src/process/worker.cpp).
//
// A worker is a child started by a ProcessPoolManager from /proc/self/exe with the parent's
// arguments plus worker_flag; its Runtime(argc, argv) finds the flag and its link (child_link())
// and calls serve_as_worker(), which never returns. On the link (frames of wire.hpp):
//   worker → parent  hello          build_fingerprint(), so a worker of another build is refused
//   parent → worker  task (id)      u32 name length, name, u8 scope flags, u64 count, then the
//                                   Job's encode_task() bytes (u32 extra length, extra, items)
//   worker → parent  result (id)    the invoker's encoded results
//   worker → parent  error (id)     encode_exception() of what the function threw
//   worker → parent  scope_request  (its own id) one Scope call, MessagePack {"op": ..., ...}
//   parent → worker  scope_reply    (same id) byte 0 then the MessagePack value, or byte 1 then
//                                   encode_exception()
// The worker runs one task at a time and exits with status 0 when the link reads end-of-file
// (the parent closed it, or died).

#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "process/child_process.hpp"
#include <scale/detail/job.hpp>

namespace scale {

class SharedMemory;
class SharedEventEmitter;

namespace detail {

/// The flag a ProcessPoolManager adds to a worker's arguments. This flag and the two below are the
/// Runtime's whole table (src/core/runtime.cpp): any other --scale-* argument is refused.
inline constexpr const char* worker_flag = "--scale-worker-link";

/// Scope flags in a task frame.
inline constexpr unsigned char task_has_memory = 1;
inline constexpr unsigned char task_has_events = 2;
/// The memory (events) has a URL, which follows the flags (u32 length, bytes): the worker opens
/// it itself instead of asking the parent over the link.
inline constexpr unsigned char task_memory_url = 4;
inline constexpr unsigned char task_events_url = 8;

/// Serves tasks on `link` until it closes, then exits the process with status 0.
[[noreturn]] void serve_as_worker(const ChildLink& link);

/// The payload of a task (the layout above, from the name on) for items [chunk.begin, chunk.end);
/// shared by the process pool (inside a task frame) and the cluster (a stream entry's field).
/// Throws what the Job's encode_task throws (a value type that cannot travel).
void append_task_payload(const Chunk& chunk, std::string& out);

/// Runs a task payload in this process: decodes it, opens the memory and emitter it names by URL,
/// and runs the registered task. Returns true with the encoded results in `out`, or false with
/// encode_exception() of what failed in `out`. A Scope without a URL is reached through `memory`
/// and `events` (null in a cluster worker, whose manager refuses such scopes).
bool run_task_payload(std::string_view payload, SharedMemory* memory, SharedEventEmitter* events, std::string& out);

/// What becomes of a chunk whose worker was lost while it ran, in the process pool and the
/// cluster alike: a chunk of several items is split in halves (so a chunk that keeps killing
/// workers narrows down to its one bad item) and runs again; a single item runs again until it was
/// lost more than `max_retries` times, then fails with scale::WorkerLost naming the item, `status`
/// and the attempts.
struct LostChunk {
  enum class Kind { split, retry, give_up } kind;
  std::size_t middle = 0;      ///< split: the second half starts here
  std::exception_ptr error;    ///< give_up: the WorkerLost
};
/// `attempts` counts the losses of this exact range; it is bumped (retry, give_up) or reset (split).
LostChunk on_lost_chunk(const Chunk& chunk, unsigned& attempts, unsigned max_retries, const std::string& status);

/// Serves a ClusterManager through the Redis at `url` (src/cluster/worker.cpp) until SIGTERM or
/// SIGINT, finishing the chunk it runs, then exits the process with status 0.
[[noreturn]] void serve_cluster_worker(const std::string& url, int heartbeat_ms);

/// The flags of a cluster worker: `--scale-worker URL` (or `--scale-worker=URL`) and
/// `--scale-heartbeat-ms N`.
inline constexpr const char* cluster_worker_flag = "--scale-worker";
inline constexpr const char* heartbeat_flag = "--scale-heartbeat-ms";

/// The parent's answer to a worker's scope_request, from the real memory and emitter (either may
/// be null); blocks until the call completes, so never on the loop thread.
std::string answer_scope_request(SharedMemory* memory, SharedEventEmitter* events, std::string_view request);

/// The program's arguments as the Runtime(argc, argv) got them (argv[0] first), for spawning
/// workers; empty when no Runtime(argc, argv) was built.
std::vector<std::string> program_arguments();
void set_program_arguments(std::vector<std::string> arguments);

}  // namespace detail
}  // namespace scale
