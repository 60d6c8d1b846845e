#pragma once
// What a cluster worker announces about itself (the value of its field in <tag>:workers, and the
// p of its "j"/"x" entries on a manager's results stream; src/cluster/keys.hpp), written by the
// worker and read by its managers through these two functions alone.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace scale::detail {

struct WorkerRecord {
  std::string host;
  int pid = 0;
  std::string fingerprint;
  int ttl_ms = 0;
  std::size_t concurrency = 1;  ///< chunks it runs at once (its threads or processes)
  bool draining = false;        ///< finishing what it holds before it leaves: give it nothing more
  /// Runs chunks on child processes (--scale-processes): a stopped chunk's child is killed after
  /// the grace; on threads it cannot be.
  bool processes = false;
  std::map<std::string, std::string> provides;  ///< what it provides (--scale-provides, or as last ordered)
  std::string site;                             ///< where it runs (--scale-site), "" when not given
  /// The fewest chunks it ran at once since its previous heartbeat: below `concurrency`, it had a
  /// free slot within the last interval, so the matcher counts it idle (cluster/assignment.hpp).
  std::size_t running = 0;
  /// Its smoothed round trip to Redis (cluster/round_trip_time.hpp), in microseconds; 0 until measured.
  std::int64_t rtt_us = 0;
};

inline std::string encode_worker_record(const WorkerRecord& record) {
  return nlohmann::json{{"host", record.host},
                        {"pid", record.pid},
                        {"fingerprint", record.fingerprint},
                        {"ttl_ms", record.ttl_ms},
                        {"concurrency", record.concurrency},
                        {"draining", record.draining},
                        {"processes", record.processes},
                        {"provides", record.provides},
                        {"site", record.site},
                        {"running", record.running},
                        {"rtt_us", record.rtt_us}}
      .dump();
}

/// The record, or nothing when `text` is not one (a field that is not a worker of ours).
inline std::optional<WorkerRecord> decode_worker_record(const std::string& text) {
  try {
    const auto json = nlohmann::json::parse(text);
    WorkerRecord record;
    record.host = json.value("host", "");
    record.pid = json.value("pid", 0);
    record.fingerprint = json.value("fingerprint", "");
    record.ttl_ms = json.value("ttl_ms", 0);
    record.concurrency = std::max<std::size_t>(1, json.value("concurrency", std::size_t{1}));
    record.draining = json.value("draining", false);
    record.processes = json.value("processes", false);
    if (json.contains("provides") && json["provides"].is_object())
      record.provides = json["provides"].get<std::map<std::string, std::string>>();
    record.site = json.value("site", "");
    record.running = json.value("running", std::size_t{0});
    record.rtt_us = std::max<std::int64_t>(0, json.value("rtt_us", std::int64_t{0}));
    return record;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace scale::detail
