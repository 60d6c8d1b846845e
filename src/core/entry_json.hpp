#pragma once
// Entry and Change as JSON, the one form every layer uses: the store's HTTP answers and SSE
// events (docs/http-api.md), the http backend that reads them, and the process link's scope
// replies. Found by ADL (namespace scale), so `json(entry)` and `json.get<Entry>()` just work.
//
//   Entry   {"key": K, "value": V, "revision": R, "timestamp_ms": T}
//   Change  the same plus "erased": true for an erase (then "value" is null)

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include <scale/detail/memory_backend.hpp>

namespace scale {

inline void to_json(nlohmann::json& out, const Entry& entry) {
  out = {
      {"key", entry.key}, {"value", entry.value}, {"revision", entry.revision}, {"timestamp_ms", entry.timestamp_ms}};
}

/// Every field is required: a store answer without one is not an entry.
inline void from_json(const nlohmann::json& in, Entry& entry) {
  entry.key = in.at("key").get<std::string>();
  entry.value = in.at("value");
  entry.revision = in.at("revision").get<Revision>();
  entry.timestamp_ms = in.at("timestamp_ms").get<std::int64_t>();
}

inline void to_json(nlohmann::json& out, const Change& change) {
  out = {{"key", change.key},
         {"value", change.value},
         {"revision", change.revision},
         {"timestamp_ms", change.timestamp_ms},
         {"erased", change.erased}};
}

/// A missing field takes its default (an SSE event of an older server may not carry "erased").
inline void from_json(const nlohmann::json& in, Change& change) {
  change.key = in.value("key", std::string{});
  change.value = in.value("value", nlohmann::json());
  change.revision = in.value("revision", Revision{0});
  change.timestamp_ms = in.value("timestamp_ms", std::int64_t{0});
  change.erased = in.value("erased", false);
}

}  // namespace scale
