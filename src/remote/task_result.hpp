#pragma once
// The result hand-back the remote managers (process pool, cluster) share: what a worker's answer
// for a task does to the task's call, once the manager has taken the task out of its in-flight
// set. One rule for both:
//   - the call was cancelled (an earlier chunk failed) or the task's group already finished:
//     nothing is accepted, and the task finishes with ChunkSkipped (which the algorithm swallows);
//   - an error answer: the worker's exception (decoded), and the call is cancelled;
//   - results: the Job's accept_results(); results that do not decode fail and cancel the call.

#include <exception>
#include <string_view>

#include <scale/detail/job.hpp>

namespace scale::detail {

/// How a worker answered a task: its results, or encode_exception() of what it threw.
enum class TaskAnswer { results, error };

/// Hands `payload` back to the call of `chunk` by the rule above; returns what the task finishes
/// with (null when its results were accepted). `group_finished` is read under the manager's lock;
/// call this outside it (accept_results decodes the whole chunk).
std::exception_ptr hand_back(const Chunk& chunk, bool group_finished, TaskAnswer answer, std::string_view payload);

}  // namespace scale::detail
