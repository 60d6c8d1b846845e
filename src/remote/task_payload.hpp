#pragma once
// The task payload: one chunk of a Job as it travels to a worker, shared by the process pool
// (inside a task frame) and the cluster (a stream entry's "p" field), and what becomes of a chunk
// whose worker was lost. The layout is written and read here alone (with the codec of bytes.hpp):
//
//   u32 + bytes  the task's name in the TaskRegistry
//   u8           scope flags (task_has_memory | task_has_events | task_memory_url | task_events_url)
//   u32 + bytes  the memory's URL, when task_memory_url
//   u32 + bytes  the emitter's URL, when task_events_url
//   u64          the number of items
//   u32 + bytes  the Job's extra bytes (Job::encode_extra: reduce's init; empty for the others)
//   rest         the items (Job::encode_items, encode_values of the chunk's items)
//
// A worker's answer is the invoker's encoded results, or encode_exception() of what failed.

#include <cstddef>
#include <exception>
#include <string>
#include <string_view>

#include <scale/crash_report.hpp>
#include <scale/detail/job.hpp>

namespace scale {

class SharedMemory;
class SharedEventEmitter;

namespace detail {

/// Scope flags in a task payload.
inline constexpr unsigned char task_has_memory = 1;
inline constexpr unsigned char task_has_events = 2;
/// The memory (events) has a URL, which follows the flags: the worker opens it itself instead of
/// asking its manager (only a process-pool parent can answer scope calls over a link).
inline constexpr unsigned char task_memory_url = 4;
inline constexpr unsigned char task_events_url = 8;

/// Appends the payload of items [chunk.begin, chunk.end). Throws what the Job's encoders throw
/// (a value type that cannot travel).
void append_task_payload(const Chunk& chunk, std::string& out);

/// The task name a payload starts with; throws scale::Error when it is not a task payload.
std::string_view task_payload_name(std::string_view payload);
/// The number of items in a payload; throws scale::Error when it is not a task payload.
std::size_t task_payload_count(std::string_view payload);

/// Runs a task payload in this process: decodes it, opens the memory and emitter it names by URL,
/// and runs the registered task. Returns true with the encoded results in `out`, or false with
/// encode_exception() of what failed in `out`. A Scope without a URL is reached through `memory`
/// and `events` (null in a cluster worker, whose manager refuses such scopes). `control`, when
/// given, is the task's stop flag, progress sink and crash-handler item index (chunk_control.hpp).
bool run_task_payload(std::string_view payload, SharedMemory* memory, SharedEventEmitter* events, std::string& out,
                      ChunkControl* control = nullptr);

/// What becomes of a chunk whose worker was lost while it ran, in the process pool and the
/// cluster alike: a chunk of several items is split in halves (so a chunk that keeps killing
/// workers narrows down to its one bad item) and runs again; a single item runs again until it was
/// lost more than `max_retries` times, then fails with scale::WorkerLost naming the item, `status`,
/// the attempts and a copy of `capsule` (what the last loss's crash handler recorded; null: none).
struct LostChunk {
  enum class Kind { split, retry, give_up } kind;
  std::size_t middle = 0;    ///< split: the second half starts here
  std::exception_ptr error;  ///< give_up: the WorkerLost
};
/// `attempts` counts the losses of this exact range; it is bumped (retry, give_up) or reset (split).
LostChunk on_lost_chunk(const Chunk& chunk, unsigned& attempts, unsigned max_retries, const std::string& status,
                        const CrashReport* capsule = nullptr);

}  // namespace detail
}  // namespace scale
