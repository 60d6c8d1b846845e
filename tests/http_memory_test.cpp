// SharedMemory("http://..."): the shared behaviour suite against embedded StoreServers (a fresh
// one per store), plus what only the http:// backend has.

#include <cstddef>
#include <string>
#include <tuple>

#include <scale/shared_memory.hpp>

#include "support/http_store.hpp"

struct Http {
  static scale::SharedMemory make() { return scale::SharedMemory(support::fresh_store_url()); }
  static scale::SharedMemory make_with_history(std::size_t history) {
    return scale::SharedMemory(support::fresh_store_url({.history = history}));
  }
};
using MemoryBackends = std::tuple<Http>;

#include "shared_memory_suite.hpp"
