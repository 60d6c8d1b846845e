#pragma once
// A Redis command or script sent from a thread that waits for its answer: a cluster worker's
// main thread reads chunks this way (cluster/chunk_reader.hpp, src/cluster/worker.cpp), while the
// client's I/O thread runs the heartbeat.

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "redis/redis_client.hpp"

namespace scale::detail {

namespace redis_wait_detail {

inline RedisClient::Callback fulfil(std::shared_ptr<std::promise<RedisReply>> promise) {
  return [promise = std::move(promise)](std::exception_ptr error, RedisReply reply) {
    if (error)
      promise->set_exception(error);
    else
      promise->set_value(std::move(reply));
  };
}

}  // namespace redis_wait_detail

/// The reply to `args` on `role` (a Redis error is a reply of Type::error, for the caller to
/// read); throws the ConnectionError that kept it from being answered.
inline RedisReply wait_for_reply(RedisClient& client, RedisClient::Role role, std::vector<std::string> args) {
  auto promise = std::make_shared<std::promise<RedisReply>>();
  auto future = promise->get_future();
  client.send(role, std::move(args), redis_wait_detail::fulfil(std::move(promise)));
  return future.get();
}

/// The reply to `script` (EVALSHA, reloaded after NOSCRIPT), as wait_for_reply.
inline RedisReply wait_for_script(RedisClient& client, const RedisScript& script, std::vector<std::string> keys,
                                  std::vector<std::string> args) {
  auto promise = std::make_shared<std::promise<RedisReply>>();
  auto future = promise->get_future();
  client.eval(script, std::move(keys), std::move(args), redis_wait_detail::fulfil(std::move(promise)));
  return future.get();
}

}  // namespace scale::detail
