#pragma once
/// \file scale::sleep_for: a Future that completes after a delay, on the loop's timer.

#include <chrono>

#include <scale/future.hpp>

namespace scale {

/// Completes on the loop thread once `duration` has passed. Needs a running scale::Runtime.
template <class Rep, class Period>
Future<void> sleep_for(std::chrono::duration<Rep, Period> duration) {
  Promise<void> promise;
  Future<void> future = promise.get_future();
  auto when = std::chrono::steady_clock::now() +
              std::chrono::duration_cast<std::chrono::steady_clock::duration>(duration);
  // The Promise is moved into the timer; when the timer cannot be set, the lambda (and the
  // Promise inside it) is dropped, failing the Future.
  bool scheduled = detail::post_at(when, [promise = std::move(promise)]() mutable { promise.set_value(); });
  if (!scheduled && !future.ready())
    return make_failed_future<void>(
        std::make_exception_ptr(Error("scale::sleep_for needs a running scale::Runtime: construct one first in main")));
  return future;
}

}  // namespace scale
