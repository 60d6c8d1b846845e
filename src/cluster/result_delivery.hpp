#pragma once
// A cluster worker's answer for one chunk as an entry of its manager's results stream
// (src/cluster/keys.hpp names the fields), with the commands that deliver it.

#include <cstdint>
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
  std::vector<std::string> acknowledge() const { return {"XACK", tasks_stream, cluster_group, entry_id}; }
  std::vector<std::string> remove() const { return {"XDEL", tasks_stream, entry_id}; }
};

}  // namespace scale::detail
