// Where a ClusterManager sends a chunk meant for one worker (cluster/worker_routes.hpp).

#include "cluster/worker_routes.hpp"

#include <algorithm>

#include "core/rendezvous.hpp"

namespace scale::detail {

const std::shared_ptr<ClassStream>& WorkerRoutes::stream(const std::string& id) {
  auto at = m_streams.find(id);
  if (at == m_streams.end()) {
    auto stream = std::make_shared<ClassStream>();
    stream->name = "worker:" + id;
    stream->key = m_keys.worker_tasks(id);
    m_worker_of.emplace(stream.get(), id);
    at = m_streams.emplace(id, std::move(stream)).first;
  }
  return at->second;
}

const std::string* WorkerRoutes::worker_of(const ClassStream& stream) const {
  if (m_worker_of.empty()) return nullptr;  // NOTE: nothing routed yet: the common case looks no further
  auto at = m_worker_of.find(&stream);
  return at == m_worker_of.end() ? nullptr : &at->second;
}

std::vector<std::shared_ptr<ClassStream>> WorkerRoutes::all() const {
  std::vector<std::shared_ptr<ClassStream>> out;
  out.reserve(m_streams.size());
  for (const auto& [id, stream] : m_streams) out.push_back(stream);
  return out;
}

void WorkerRoutes::forget(const std::string& id) {
  auto at = m_streams.find(id);
  if (at == m_streams.end()) return;
  m_worker_of.erase(at->second.get());
  m_streams.erase(at);
}

const std::vector<std::string>& WorkerRoutes::targets(
    const ClassStream& home, std::uint64_t version,
    const std::function<std::vector<std::string>(const Requirement&)>& eligible) {
  if (version != m_version) {
    m_targets.clear();
    m_version = version;
  }
  auto at = m_targets.find(&home);
  if (at == m_targets.end()) {
    std::vector<std::string> ids = eligible(home.requirement);
    std::sort(ids.begin(), ids.end());
    at = m_targets.emplace(&home, std::move(ids)).first;
  }
  return at->second;
}

const std::string& WorkerRoutes::pick(std::string_view key, const std::vector<std::string>& targets) {
  return targets[rendezvous_pick(key, targets)];
}

}  // namespace scale::detail
