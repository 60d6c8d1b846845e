#pragma once
// The worker side of the process pool, and the protocol both sides share (src/worker.cpp).
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

#include <string>
#include <string_view>
#include <vector>

#include <scale/detail/child_process.hpp>

namespace scale {

class SharedMemory;
class SharedEventEmitter;

namespace detail {

/// The flag a ProcessPoolManager adds to a worker's arguments (Runtime strips every --scale-* flag).
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

/// The parent's answer to a worker's scope_request, from the real memory and emitter (either may
/// be null); blocks until the call completes, so never on the loop thread.
std::string answer_scope_request(SharedMemory* memory, SharedEventEmitter* events, std::string_view request);

/// The program's arguments as the Runtime(argc, argv) got them (argv[0] first), for spawning
/// workers; empty when no Runtime(argc, argv) was built.
std::vector<std::string> program_arguments();
void set_program_arguments(std::vector<std::string> arguments);

}  // namespace detail
}  // namespace scale
