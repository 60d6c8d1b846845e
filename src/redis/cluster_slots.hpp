#pragma once
// The answer to CLUSTER SLOTS: which node holds each range of slots. The client asks for it after
// a MOVED, so that one redirection teaches it the whole map rather than one slot (the Redis
// Cluster specification recommends refreshing the map then). CLUSTER SLOTS rather than CLUSTER
// SHARDS: it is in every Redis with Cluster (3.0 on; deprecated, not removed, in 7.0), and it
// gives just what routing needs.

#include <string>
#include <vector>

#include "redis/redis_client.hpp"

namespace scale::detail {

struct SlotRange {
  int first = 0;
  int last = 0;
  std::string host;  // empty (NULL or "" in the reply): the host of the node that answered
  std::string port;
};

/// The ranges of a CLUSTER SLOTS reply (its master of each range; replicas are not used);
/// throws scale::Error for a reply of another shape.
std::vector<SlotRange> parse_cluster_slots(const RedisReply& reply);

}  // namespace scale::detail
