#pragma once
// WorkerSetups: a cluster worker runs each manager's setups (on_every_worker) before any chunk of
// that manager, late joiners included (src/cluster/keys.hpp: <tag>:setups:<manager> and the
// entries' "s").
//
// Why it looks like this:
//   - No race between a setup and a chunk: every entry of a manager with setups says how many it
//     had when the chunk was queued ("s", the generation), and the manager adds a setup to its list
//     before any later XADD on the same connection. A worker that sees a chunk of a generation it
//     has not reached reads the setups it lacks (LRANGE from what it ran to s - 1) and runs them in
//     order, then the chunk. A chunk of a manager without setups carries no "s" and costs a
//     lookup of an empty field.
//   - Run on the worker's main thread, between reading and starting chunks: nothing of that manager
//     starts before its setups ended, and chunks already running go on.
//   - A setup that throws keeps this worker from that manager for good (the worker's process state
//     is what the setup was to make): the manager hears of it ("f", with the exception), the
//     reader stops serving the manager's streams, and chunks of it read later go back ("b").
//     Other managers' chunks run on.
//   - A --scale-processes worker runs each setup in its own process first (where a throw refuses the
//     manager as above), then hands it to its process pool (ran(payload)), whose children run it
//     before their next chunk, respawned children included: a setup that loads a model must load
//     it where the chunks run.

#include <functional>
#include <map>
#include <string>

#include "cluster/keys.hpp"
#include "redis/redis_client.hpp"

namespace scale::detail {

class WorkerSetups {
 public:
  /// `refused(manager)`: called (main thread) once a setup of that manager threw here.
  /// `ran(payload)`: called (main thread) after each setup that ran here without throwing.
  WorkerSetups(RedisClient& client, const ClusterKeys& keys, std::string worker,
               std::function<void(const std::string&)> refused, std::function<void(const std::string&)> ran);

  /// Whether this worker may run a chunk of `manager` whose entry says `generation` (its "s",
  /// empty when the manager has no setups): runs the setups it lacks first. False when one of
  /// them threw, now or before. Main thread; throws ConnectionError when Redis cannot be reached.
  bool ready(const std::string& manager, const std::string& generation);

 private:
  struct Manager {
    std::size_t run = 0;   // setups run, in order
    bool failed = false;  // one threw: none of its chunks runs here
  };

  RedisClient& m_client;
  ClusterKeys m_keys;
  std::string m_worker;
  std::function<void(const std::string&)> m_refused;
  std::function<void(const std::string&)> m_ran;
  std::map<std::string, Manager> m_managers;
};

}  // namespace scale::detail
