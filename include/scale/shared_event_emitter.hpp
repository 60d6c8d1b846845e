#pragma once
/// \file scale::SharedEventEmitter: named events across threads, processes and servers.

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include <scale/detail/event_backend.hpp>
#include <scale/future.hpp>
#include <scale/subscription.hpp>

namespace scale {

/// Named events with JSON payloads. A cheap, copyable handle: copies share one bus. Each
/// default-constructed emitter is a bus of its own; emitters built from the same URL share the
/// bus at that URL. Events of one emitter reach each subscriber in the order emitted, and
/// handlers run on the loop. Every call may be made from any thread.
class SharedEventEmitter {
 public:
  using Handler = std::function<void(const nlohmann::json&)>;

  /// A new bus in this process.
  SharedEventEmitter() : m_backend(detail::make_in_process_events()) {}
  /// The bus at `url` ("http://host:port", "redis://host:port"); throws scale::Error for a
  /// scheme this build does not support.
  explicit SharedEventEmitter(std::string url) : m_backend(detail::make_event_backend(url)), m_url(std::move(url)) {}
  /// Over a given backend (for backend implementers).
  explicit SharedEventEmitter(std::shared_ptr<detail::EventBackend> backend) noexcept : m_backend(std::move(backend)) {}

  /// The URL this emitter was opened with; empty for a bus in this process.
  const std::string& url() const noexcept { return m_url; }

  /// Sends `payload` to every current subscriber of `event` (exact name match). Any type with a
  /// JSON conversion works as the payload (to_json for user types).
  Future<void> emit(std::string event, nlohmann::json payload = nullptr) const {
    return m_backend->emit(std::move(event), std::move(payload));
  }

  /// Calls `handler` on the loop with the payload of every later emit of `event`, in emit order.
  /// The handler never runs inside on() itself; ready() tells when emits reach it.
  Subscription on(std::string event, Handler handler) const {
    auto queue = std::make_shared<detail::SubscriptionQueue<nlohmann::json>>(std::move(handler));
    m_backend->subscribe(std::move(event), queue);
    return Subscription(std::move(queue));
  }

  /// The payload of the next emit of `event` after this call.
  Future<nlohmann::json> once(std::string event) const;

 private:
  std::shared_ptr<detail::EventBackend> m_backend;
  std::string m_url;
};

namespace detail {

/// once(): a subscription that completes a Promise with the first payload and then cancels itself.
/// NOTE: the backend's registration keeps the queue alive; the handler refers to it weakly, so
/// there is no cycle, and a once() that never fires lives as long as the bus.
struct OnceState {
  Promise<nlohmann::json> promise;
  std::weak_ptr<SubscriptionQueue<nlohmann::json>> queue;
};

}  // namespace detail

inline Future<nlohmann::json> SharedEventEmitter::once(std::string event) const {
  auto state = std::make_shared<detail::OnceState>();
  Future<nlohmann::json> result = state->promise.get_future();
  auto queue = std::make_shared<detail::SubscriptionQueue<nlohmann::json>>([state](const nlohmann::json& payload) {
    if (!state->promise.set_value(payload)) return;
    if (auto self = state->queue.lock()) self->cancel();
  });
  state->queue = queue;
  m_backend->subscribe(std::move(event), queue);
  return result;
}

}  // namespace scale
