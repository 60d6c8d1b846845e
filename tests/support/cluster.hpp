#pragma once
// What a ClusterManager test needs on the shared redis-server: a URL with a namespace of its
// own, that namespace's key tag, one Redis command for looking at keys, and options with the
// short test heartbeats.

#include <scale/managers/cluster.hpp>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "redis/redis_client.hpp"

#include "redis_server.hpp"
#include "worker_process.hpp"

namespace support {

/// A URL on the shared server with a namespace of its own.
inline std::string fresh_url() { return RedisServer::shared().url() + "?namespace=" + RedisServer::fresh_namespace(); }

/// The hash tag every key of `url`'s namespace starts with.
inline std::string tag_of(const std::string& url) {
  return "{scale:" + url.substr(url.find("namespace=") + 10) + "}";
}

/// One Redis command from the test, for looking at keys.
inline scale::detail::RedisReply redis(const std::string& url, std::vector<std::string> args) {
  scale::detail::RedisClient client(scale::detail::parse_redis_url(url.substr(0, url.find('?'))));
  return client.command(std::move(args)).get();
}

/// Short heartbeats (test_heartbeat), so a lost worker is noticed soon; a chunk waits 10 s for a
/// worker.
inline scale::ClusterOptions fast_options() {
  scale::ClusterOptions options;
  options.heartbeat_interval = test_heartbeat;
  options.heartbeat_ttl = test_heartbeat_ttl;
  options.wait_for_workers = std::chrono::seconds(10);
  return options;
}

}  // namespace support
