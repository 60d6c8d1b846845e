#pragma once
// The one bridge from a callback API (the http and Redis clients, whose callbacks take
// `(std::exception_ptr error, Reply reply)` on their I/O thread) to a Future: a Promise shared
// with the callback that completes it.

#include <exception>
#include <memory>
#include <type_traits>
#include <utility>

#include <scale/future.hpp>

namespace scale::detail {

/// A Promise<T> a callback completes, and the Future it gives the caller.
template <class T>
struct PromiseCallback {
  std::shared_ptr<Promise<T>> promise = std::make_shared<Promise<T>>();
  Future<T> future = promise->get_future();

  /// Completes the promise with produce() (called for its effects when T is void), or with the
  /// exception it throws.
  template <class Produce>
  static void complete(Promise<T>& promise, Produce&& produce) {
    try {
      if constexpr (std::is_void_v<T>) {
        std::forward<Produce>(produce)();
        promise.set_value();
      } else {
        promise.set_value(std::forward<Produce>(produce)());
      }
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
  }

  /// The callback `(std::exception_ptr error, Reply reply)`: the promise fails with `error` when
  /// the call failed; otherwise it completes with convert(reply), which may throw the error the
  /// reply means.
  template <class Reply, class Convert>
  auto callback(Convert convert) const {
    return [promise = promise, convert = std::move(convert)](std::exception_ptr error, Reply reply) mutable {
      if (error) {
        promise->set_exception(std::move(error));
        return;
      }
      complete(*promise, [&]() -> decltype(auto) { return convert(std::move(reply)); });
    };
  }
};

}  // namespace scale::detail
