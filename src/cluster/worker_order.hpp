#pragma once
// An order from a ClusterManager to one worker (an entry of <tag>:orders:<worker>;
// src/cluster/keys.hpp), encoded by the manager and decoded by the worker here alone.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace scale::detail {

struct SentOrder {
  std::uint64_t id = 0;     ///< the manager's, echoed in the worker's "o" entry
  std::string manager;      ///< whose results stream hears that the order was taken
  std::string fingerprint;  ///< a worker obeys the managers of its own build only
  bool drain = false;
  std::optional<std::size_t> threads;
  std::optional<std::map<std::string, std::string>> provides;
};

inline std::string encode_order(const SentOrder& order) {
  nlohmann::json json{{"id", order.id}, {"m", order.manager}, {"fingerprint", order.fingerprint}};
  if (order.drain) json["drain"] = true;
  if (order.threads) json["threads"] = *order.threads;
  if (order.provides) json["provides"] = *order.provides;
  return json.dump();
}

/// The order, or nothing when `text` is not one.
inline std::optional<SentOrder> decode_order(const std::string& text) {
  try {
    const auto json = nlohmann::json::parse(text);
    SentOrder order;
    order.id = json.at("id").get<std::uint64_t>();
    order.manager = json.at("m").get<std::string>();
    order.fingerprint = json.value("fingerprint", "");
    order.drain = json.value("drain", false);
    if (json.contains("threads")) order.threads = json["threads"].get<std::size_t>();
    if (json.contains("provides")) order.provides = json["provides"].get<std::map<std::string, std::string>>();
    return order;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace scale::detail
