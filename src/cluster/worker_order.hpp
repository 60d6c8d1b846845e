#pragma once
// An order from a ClusterManager to one worker (an entry of <tag>:orders:<worker>;
// src/cluster/keys.hpp), encoded by the manager and decoded by the worker here alone. Besides
// drain, threads and provides (ClusterManager::drain and order), a manager that stops a call
// names the task entries of it that the worker holds: `stop` (set their stop flags) and, once
// the call's grace has passed, `abandon` (the manager no longer waits for them).

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace scale::detail {

struct SentOrder {
  std::uint64_t id = 0;     ///< the manager's, echoed in the worker's "o" entry
  std::string manager;      ///< whose results stream hears that the order was taken
  std::string fingerprint;  ///< a worker obeys the managers of its own build only
  bool drain = false;
  std::optional<std::size_t> threads;
  std::optional<std::map<std::string, std::string>> provides;
  std::vector<std::string> stop;     ///< task entries (stream ids) whose call was stopped
  std::vector<std::string> abandon;  ///< stopped task entries still running after the grace

  /// Only stops and abandons: nothing in the worker's record changes, and no one waits for an "o".
  bool only_chunks() const { return !drain && !threads && !provides; }
};

inline std::string encode_order(const SentOrder& order) {
  nlohmann::json json{{"id", order.id}, {"m", order.manager}, {"fingerprint", order.fingerprint}};
  if (order.drain) json["drain"] = true;
  if (order.threads) json["threads"] = *order.threads;
  if (order.provides) json["provides"] = *order.provides;
  if (!order.stop.empty()) json["stop"] = order.stop;
  if (!order.abandon.empty()) json["abandon"] = order.abandon;
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
    if (json.contains("stop")) order.stop = json["stop"].get<std::vector<std::string>>();
    if (json.contains("abandon")) order.abandon = json["abandon"].get<std::vector<std::string>>();
    return order;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace scale::detail
