// A cluster worker runs its managers' setups before their chunks (cluster/worker_setups.hpp).

#include "cluster/worker_setups.hpp"

#include <cstdlib>
#include <utility>

#include "cluster/redis_wait.hpp"
#include "remote/task_payload.hpp"
#include <scale/detail/loop.hpp>
#include <scale/error.hpp>

namespace scale::detail {

namespace {

using Role = RedisClient::Role;

}  // namespace

WorkerSetups::WorkerSetups(RedisClient& client, const ClusterKeys& keys, std::string worker,
                           std::function<void(const std::string&)> refused, std::function<void(const std::string&)> ran)
    : m_client(client),
      m_keys(keys),
      m_worker(std::move(worker)),
      m_refused(std::move(refused)),
      m_ran(std::move(ran)) {}

bool WorkerSetups::ready(const std::string& manager, const std::string& generation) {
  if (generation.empty()) {
    // A manager without setups (the common case), or a chunk queued before its first.
    const auto at = m_managers.find(manager);
    return at == m_managers.end() || !at->second.failed;
  }
  Manager& state = m_managers[manager];
  if (state.failed) return false;
  const std::size_t wanted = std::strtoull(generation.c_str(), nullptr, 10);
  if (state.run >= wanted) return true;
  const RedisReply reply =
      wait_for_reply(m_client, Role::commands,
                     {"LRANGE", m_keys.setups(manager), std::to_string(state.run), std::to_string(wanted - 1)});
  if (reply.is_error()) throw Error("Redis (" + m_client.url().text + ") answered LRANGE of the setups: " + reply.str);
  for (const RedisReply& setup : reply.elements) {
    std::string answer;
    if (!run_task_payload(setup.str, nullptr, nullptr, answer, nullptr)) {
      state.failed = true;
      log_error("worker " + m_worker + ": a setup (on_every_worker) of manager " + manager +
                " threw here; this worker runs none of that manager's chunks");
      // "f" goes ahead of the "b" of any chunk given back, on the same connection: the manager
      // knows this worker refuses before it queues that chunk again.
      m_client.send(Role::commands,
                    {"XADD", m_keys.results(manager), "NOMKSTREAM", "*", "k", "f", "w", m_worker, "p", answer},
                    [](std::exception_ptr, RedisReply) {});
      m_refused(manager);
      return false;
    }
    m_ran(setup.str);
    ++state.run;
  }
  // NOTE: a list shorter than the generation belongs to a manager that went (its list expired):
  // its chunks are dropped with its results stream, so what ran is enough.
  state.run = wanted;
  return true;
}

}  // namespace scale::detail
