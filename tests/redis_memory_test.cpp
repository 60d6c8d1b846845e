// SharedMemory("redis://..."): the shared behaviour suite against a redis-server of the test's own
// (each store in a namespace of its own), plus what only the redis:// backend has.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <vector>
#include <string>
#include <thread>
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

#include "redis/redis_client.hpp"

TEST_CASE("a redis:// store keeps every key under its hash tag", "[shared_memory][redis]") {
  scale::Runtime runtime;
  auto name = support::RedisServer::fresh_namespace();
  scale::SharedMemory memory(support::RedisServer::shared().url() + "?namespace=" + name);
  memory.set("a", 1).get();
  memory.increment("n").get();
  memory.erase("a").get();
  scale::detail::RedisClient client(scale::detail::parse_redis_url(support::RedisServer::shared().url()));
  auto keys = client.command({"KEYS", "*" + name + "*"}).get();
  std::vector<std::string> names;
  for (const auto& key : keys.elements) names.push_back(key.str);
  std::sort(names.begin(), names.end());
  auto tag = "{scale:" + name + "}";
  REQUIRE(names == std::vector<std::string>{tag + ":changes", tag + ":data", tag + ":revision"});
  // Stream IDs follow revisions: <revision>-<index of the key in the write>.
  auto last = client.command({"XREVRANGE", tag + ":changes", "+", "-", "COUNT", "1"}).get();
  REQUIRE(last.elements[0].elements[0].str == "3-0");
}

TEST_CASE("a redis:// URL with an unknown option or an unreachable server fails clearly", "[shared_memory][redis]") {
  scale::Runtime runtime;
  REQUIRE_THROWS_WITH(scale::SharedMemory(support::RedisServer::shared().url() + "?colour=red"),
                      Catch::Contains("unknown option 'colour'"));
  std::string url = "redis://127.0.0.1:" + std::to_string(support::RedisServer::free_port());
  scale::SharedMemory memory(url);
  REQUIRE_THROWS_AS(memory.set("k", 1).get(), scale::ConnectionError);
  REQUIRE_THROWS_WITH(memory.get<int>("k").get(), Catch::Contains(url));
}

TEST_CASE("a redis:// memory destroyed while its watch's tail is answered never touches a destroyed client",
          "[shared_memory][redis]") {
  // NOTE: the tail's reply callback sends the next XREAD; it used to run while the destructor
  // cleared the client pointer (unique_ptr::reset), and dereference null. A writer keeps the
  // tail's XREAD answering, so destruction keeps meeting a callback in flight.
  scale::Runtime runtime;
  const std::string url = support::RedisServer::shared().url() +
                          "?namespace=" + support::RedisServer::fresh_namespace();
  scale::SharedMemory writer(url);
  std::atomic<bool> writing{true};
  std::thread writes([&] {
    while (writing.load()) writer.increment("n").get();
  });
  for (int round = 0; round < 150; ++round) {
    scale::SharedMemory memory(url);
    auto watch = memory.watch("", [](const scale::Change&) {});
    watch.ready().get();
  }
  writing = false;
  writes.join();
  REQUIRE(writer.get<std::int64_t>("n").get() > 0);
}
