#pragma once
// Where a Job was made: the thread-pool chunk that was running on the making thread, if any.
//
// A nested call (a map made inside a function that a ThreadPoolManager thread runs) records the
// chunk it was made in, and that chunk's Job records where it was made in turn, up to a call made
// outside any pool chunk (null). A pool thread waiting inside a chunk helps only with chunks of
// Jobs nested in it (src/core/help_while_waiting.hpp says why).

#include <memory>

namespace scale::detail {

/// One running pool chunk that a Job was made in. Immutable once made; shared by the Jobs made in
/// it, so it outlives the chunk when one of them does.
struct NestingFrame {
  std::shared_ptr<const NestingFrame> outer;  ///< where the chunk's own Job was made, or null
};

/// The frame of the pool chunk this thread is running, made on first use; null on any other
/// thread. Defined in src/core/help_while_waiting.cpp.
std::shared_ptr<const NestingFrame> current_nesting_frame();

}  // namespace scale::detail
