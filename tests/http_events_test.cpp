// SharedEventEmitter("http://..."): the shared behaviour suite against embedded StoreServers (a
// fresh one per bus).

#include <string>
#include <tuple>

#include <scale/shared_event_emitter.hpp>

#include "support/http_store.hpp"

struct HttpBus {
  static scale::SharedEventEmitter make_events() { return scale::SharedEventEmitter(support::fresh_store_url()); }
};
using EventBackends = std::tuple<HttpBus>;

#include "shared_event_emitter_suite.hpp"
