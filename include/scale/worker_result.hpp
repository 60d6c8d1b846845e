#pragma once
/// \file scale::WorkerResult and scale::WorkerReply: a value together with the worker that made it.

#include <exception>
#include <optional>
#include <string>

namespace scale {

/// One item's result of Iterator::map_with_workers, with the id of the worker that produced it:
/// "inline" on InlineManager, "thread-<k>" on a ThreadPoolManager (its k-th thread slot),
/// "child-<k>" on a ProcessPoolManager (its k-th child slot), the worker's id
/// (ClusterWorker::id) on a ClusterManager.
template <class R>
struct WorkerResult {
  R value;
  std::string worker;
};

/// What one worker answered to ScalabilityManager::broadcast: its id (as in WorkerResult) and
/// either the value its function returned or the exception it threw (a worker lost meanwhile:
/// scale::WorkerLost). Exactly one of `value` and `error` is set.
template <class R>
struct WorkerReply {
  std::string worker;
  std::optional<R> value;
  std::exception_ptr error;
};

/// The reply of a function that returns nothing: `error` is null when it ran.
template <>
struct WorkerReply<void> {
  std::string worker;
  std::exception_ptr error;
};

}  // namespace scale
