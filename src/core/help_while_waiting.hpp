#pragma once
// Help while waiting: what a ThreadPoolManager thread may run while a Future::get() it called
// waits, so that a nested map on the same pool cannot deadlock (as TBB's isolated wait and
// Taskflow's corun do).
//
// Why it looks like this:
//   - A pool thread marks the chunk it runs with a ChunkFrame (thread-local, innermost first).
//     A Job made while the frame is current is nested in it (Job::made_in, nesting.hpp); the
//     frame's record is made only then, so a chunk that nests nothing costs two thread-local
//     writes and no allocation.
//   - NOTE: a waiting thread runs only chunks of Jobs nested in the chunk it waits in (made in
//     it, or in a chunk of such a Job, at any depth, on any pool). Those are exactly the chunks
//     its wait may depend on: the nested call cannot complete before they have run, so running
//     them on this stack adds no new wait. Any other queued chunk might: a sibling item of the
//     outer map could block on something the waiting item does only after its get() returns (a
//     latch it counts down, a std::mutex it holds across the call), and run on top of the
//     waiting item it would block forever on a frame below it on the same stack. Isolation also
//     bounds the stack: each level of nesting adds at most one chunk frame, and a thread whose
//     nested call completes returns to it as soon as the chunk it runs (part of that call) ends.
//   - The nested call's dispatch runs on the loop thread, never on a pool thread, so the chunks
//     a waiting thread needs keep being submitted while every pool thread waits.

#include <memory>

#include <scale/detail/job.hpp>
#include <scale/detail/nesting.hpp>

namespace scale::detail {

/// Marks the chunk of `job` that this thread runs for as long as it lives.
class ChunkFrame {
 public:
  explicit ChunkFrame(const Job& job) noexcept;
  ~ChunkFrame();
  ChunkFrame(const ChunkFrame&) = delete;
  ChunkFrame& operator=(const ChunkFrame&) = delete;

 private:
  friend std::shared_ptr<const NestingFrame> current_nesting_frame();
  friend const NestingFrame* innermost_nesting_frame() noexcept;
  const Job& m_job;
  std::shared_ptr<const NestingFrame> m_record;  // made when a Job is made in this frame
  ChunkFrame* m_outer;
};

/// The record of the innermost chunk this thread runs, or null when no Job was made in it (then
/// nothing can be nested in it, and a wait there has nothing to help with).
const NestingFrame* innermost_nesting_frame() noexcept;

/// True when `job` was made in `frame` or in a chunk of a Job nested in it.
inline bool nested_in(const Job& job, const NestingFrame* frame) noexcept {
  for (const NestingFrame* at = job.made_in().get(); at != nullptr; at = at->outer.get())
    if (at == frame) return true;
  return false;
}

}  // namespace scale::detail
