#pragma once
// A cluster worker's answer for one chunk as an entry of its manager's results stream
// (src/cluster/keys.hpp names the fields), with the commands that deliver it; then its task
// entry is acknowledged and removed, only once the result is in Redis (a worker that dies between
// leaves the entry pending, and the chunk runs again).

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cluster/keys.hpp"

namespace scale::detail {

struct ResultDelivery {
  std::string results_stream;  // <tag>:results:<manager>
  std::string attempt;         // the task entry's "a"
  char kind = 'e';             // "k": 'r' results, 'e' an encoded exception, 'l' the child running it died
  std::string worker;          // "w": this worker's id
  std::string payload;         // "p"
  std::int64_t took_us = 0;    // "t": how long the chunk ran on the worker
  std::string tasks_stream;    // where the task entry was read from
  std::string entry_id;        // the task entry, acknowledged and removed once the result is added
  bool refused = false;        // Redis refused it once; the payload is now that error

  /// XADD of the result (NOMKSTREAM: a manager that is gone has no stream to fill).
  std::vector<std::string> add_result() const {
    return {"XADD", results_stream,          "NOMKSTREAM", "*",    "a", attempt, "k", std::string(1, kind), "w", worker,
            "t",    std::to_string(took_us), "p",          payload};
  }
};

/// The task entries whose results are in Redis, to acknowledge and remove together: one XACK and
/// one XDEL per stream for every result answered in one read, not two commands per chunk.
struct TaskAcknowledgements {
  std::map<std::string, std::vector<std::string>> entries;  // by tasks stream

  void add(const ResultDelivery& delivery) { entries[delivery.tasks_stream].push_back(delivery.entry_id); }
  bool empty() const noexcept { return entries.empty(); }

  /// Calls `send(xack, xdel, count)` for each stream's entries, then forgets them.
  template <class Send>
  void take(Send&& send) {
    for (auto& [stream, ids] : entries) {
      std::vector<std::string> ack{"XACK", stream, cluster_group};
      std::vector<std::string> del{"XDEL", stream};
      ack.insert(ack.end(), ids.begin(), ids.end());
      del.insert(del.end(), ids.begin(), ids.end());
      send(std::move(ack), std::move(del), ids.size());
    }
    entries.clear();
  }
};

}  // namespace scale::detail
