#pragma once
/// \file scale::Runtime: the loop thread every callback and coroutine resumption runs on.

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <scale/future.hpp>

namespace scale {

namespace detail {
class RuntimeImpl;

template <class T>
Detached forward_into(Future<T> future, Promise<T> promise) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(future);
      promise.set_value();
    } else {
      promise.set_value(co_await std::move(future));
    }
  } catch (...) {
    promise.set_exception(std::current_exception());
  }
}
}  // namespace detail

/// How a Runtime treats the application process; meant for designated initialisers.
struct RuntimeOptions {
  /// Handle SIGINT and SIGTERM: the first one stops every running call (each fails with
  /// scale::Cancelled, as through RunOptions::stop, so the program can report it and exit its own
  /// way; calls started later fail at once too), a second one kills the worker processes and ends
  /// the program at once. False leaves the signals to the program.
  bool handle_signals = true;
};

/// The process's runtime: owns the loop thread. Construct it first in main; one at a time.
/// Destroying it fails every pending Future with scale::Stopped.
class Runtime {
 public:
  /// A runtime for a program that has no command line to share (tests, embedding).
  Runtime();
  explicit Runtime(RuntimeOptions options);
  /// Takes the `--scale-*` flags out of argc/argv. In a worker process it serves tasks and exits.
  Runtime(int& argc, char** argv, RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  /// Calls `callable` on the loop thread and blocks until the Future it returns completes;
  /// returns its value or rethrows its error. `callable` may also return a plain value.
  template <class F>
  auto run(F&& callable) {
    using R = std::invoke_result_t<F&>;
    using T = detail::unwrap_t<R>;
    Promise<T> promise;
    Future<T> result = promise.get_future();
    post_to_loop([&callable, promise = std::move(promise)]() mutable {
      try {
        if constexpr (detail::is_future_v<R>) {
          detail::forward_into(callable(), std::move(promise));
        } else if constexpr (std::is_void_v<R>) {
          callable();
          promise.set_value();
        } else {
          promise.set_value(callable());
        }
      } catch (...) {
        promise.set_exception(std::current_exception());
      }
    });
    return result.get();
  }

  /// Stops every running call and every later one, as the first Ctrl-C does (any thread).
  void request_stop();
  /// True once request_stop() was called or a handled SIGINT/SIGTERM arrived.
  bool stop_requested() const noexcept;

  /// The `--scale-*` flags this runtime took out of the command line, in order.
  const std::vector<std::string>& scale_flags() const noexcept;

  /// The program's arguments as given (argv[0] first), `--scale-*` flags included.
  const std::vector<std::string>& original_arguments() const noexcept;

 private:
  void post_to_loop(detail::UniqueFunction fn);
  std::unique_ptr<detail::RuntimeImpl> m_impl;
};

}  // namespace scale
