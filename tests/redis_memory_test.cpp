// SharedMemory("redis://..."): the shared behaviour suite against a redis-server of the test's own
// (each store in a namespace of its own), plus what only the redis:// backend has.

#include <cstddef>
#include <string>
#include <tuple>

#include <scale/shared_memory.hpp>

#include "support/redis_server.hpp"

struct Redis {
  static scale::SharedMemory make() {
    return scale::SharedMemory(support::RedisServer::shared().url() +
                               "?namespace=" + support::RedisServer::fresh_namespace());
  }
  static scale::SharedMemory make_with_history(std::size_t history) {
    return scale::SharedMemory(support::RedisServer::shared().url() + "?namespace=" +
                               support::RedisServer::fresh_namespace() + "&history=" + std::to_string(history));
  }
};
using MemoryBackends = std::tuple<Redis>;

#include "shared_memory_suite.hpp"
