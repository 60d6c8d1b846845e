#pragma once
// The one interface every SharedEventEmitter backend implements (in-process, http://, redis://).

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include <scale/detail/subscription_state.hpp>
#include <scale/future.hpp>

namespace scale::detail {

/// A SharedEventEmitter backend. Every member may be called from any thread at the same time.
class EventBackend {
 public:
  virtual ~EventBackend() = default;

  /// Sends `payload` to every subscriber of `event` (exact name match); completes once it is
  /// handed to the bus (in-process: enqueued for every current subscriber).
  virtual Future<void> emit(std::string event, nlohmann::json payload) = 0;
  /// Delivers every later emit of `event` to `queue`, in the order emitted. The backend must
  /// enqueue in emit order (see SubscriptionQueue::enqueue), call queue->set_ready() once it
  /// delivers (or set_error()), and give queue->set_canceller() what unregisters it. Never calls
  /// the handler itself.
  virtual void subscribe(std::string event, std::shared_ptr<SubscriptionQueue<nlohmann::json>> queue) = 0;
};

/// The in-process bus (src/in_process/in_process_events.cpp).
std::shared_ptr<EventBackend> make_in_process_events();

/// The backend for a URL; throws scale::Error for a scheme this build does not support.
std::shared_ptr<EventBackend> make_event_backend(const std::string& url);

}  // namespace scale::detail
