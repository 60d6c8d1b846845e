// SharedEventEmitter("redis://..."): the shared behaviour suite against a redis-server of the
// test's own (each bus in a namespace of its own), plus what only the redis:// backend has.

#include <string>
#include <tuple>

#include <scale/shared_event_emitter.hpp>

#include "support/redis_server.hpp"

struct RedisBus {
  static scale::SharedEventEmitter make_events() {
    return scale::SharedEventEmitter(support::RedisServer::shared().url() +
                                     "?namespace=" + support::RedisServer::fresh_namespace());
  }
};
using EventBackends = std::tuple<RedisBus>;

#include "shared_event_emitter_suite.hpp"
