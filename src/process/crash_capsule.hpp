#pragma once
// The capsule of a lost worker: the scale::CrashReport a ProcessPoolManager attaches to the
// WorkerLost of an item whose worker died of SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT, made
// from the worker's crash record (process/crash_record.hpp) and the chunk it was running.

#include <cstdint>
#include <optional>

#include "process/child_process.hpp"
#include "process/crash_record.hpp"
#include <scale/crash_report.hpp>
#include <scale/detail/job.hpp>

namespace scale::detail {

/// True for the signals a worker's crash handler catches.
bool is_crash_signal(int signal) noexcept;

/// The capsule of a worker that ended as `exit` while running task `task_id` (the frame id its
/// parent gave it), which is items [chunk.begin, chunk.end) of chunk.job: the item is
/// chunk.begin plus the record's index within the chunk, its text Job::item_text(), the stack
/// symbolized here. None when the worker did not die of a crash signal, or left no complete
/// record of that task (killed before it could write, or crashed between tasks).
std::optional<CrashReport> crash_capsule(const ExitInfo& exit, const CrashRecordFile& record, std::uint64_t task_id,
                                         const Chunk& chunk);

}  // namespace scale::detail
