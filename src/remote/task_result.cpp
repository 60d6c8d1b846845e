// The result hand-back of the remote managers (remote/task_result.hpp).

#include "remote/task_result.hpp"

#include "remote/wire_error.hpp"

namespace scale::detail {

std::exception_ptr hand_back(const Chunk& chunk, bool group_finished, TaskAnswer answer, std::string_view payload) {
  Job& job = *chunk.job;
  if (group_finished || job.cancelled()) return std::make_exception_ptr(ChunkSkipped());
  std::exception_ptr error;
  try {
    if (answer == TaskAnswer::error)
      error = decode_exception(payload);
    else
      job.accept_results(chunk.begin, chunk.end, payload);
  } catch (...) {
    error = std::current_exception();  // a malformed answer fails the call as the worker's error would
  }
  if (error) job.cancel();
  return error;
}

}  // namespace scale::detail
