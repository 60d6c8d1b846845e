#pragma once
// The in-process event bus as the store serves it: besides EventBackend's subscribers of one exact
// name, subscribers of every event whose name starts with a prefix (GET /v1/stream's
// event_prefix=, the dashboard's list of every event). Private to the library: the prefix form
// needs the name with each payload, which SharedEventEmitter's handlers do not take.

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include <scale/detail/event_backend.hpp>
#include <scale/detail/subscription_state.hpp>

namespace scale::detail {

/// One emit as a prefix subscriber sees it: the name it was emitted under and its payload (shared
/// with every other subscriber of that emit).
struct NamedEvent {
  std::string name;
  std::shared_ptr<const nlohmann::json> payload;
};

/// The in-process bus (make_in_process_bus). Every member may be called from any thread.
class InProcessEvents : public EventBackend {
 public:
  /// Delivers every later emit whose name starts with `prefix` ("": every emit) to `queue`, in
  /// the order emitted, as subscribe() does for one name.
  /// NOTE: exact-name subscribers are found by one hash lookup per emit; prefix subscribers are
  /// kept apart and scanned, so only they cost an emit anything more (nothing when there is none).
  virtual void subscribe_prefix(std::string prefix, std::shared_ptr<SubscriptionQueue<NamedEvent>> queue) = 0;
};

/// The in-process bus; make_in_process_events() returns one too.
std::shared_ptr<InProcessEvents> make_in_process_bus();

}  // namespace scale::detail
