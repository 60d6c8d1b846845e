// What the workers a ClusterManager has seen provide (cluster/worker_offers.hpp).

#include "cluster/worker_offers.hpp"

namespace scale::detail {

void WorkerOffers::seen(const std::string& id, const Provides& provides, Clock::time_point now) {
  auto [at, added] = m_offers.try_emplace(id, Offer{provides, now});
  if (!added) {
    at->second.seen = now;
    if (at->second.provides == provides) return;
    at->second.provides = provides;
  }
  ++m_version;
}

void WorkerOffers::expire(Clock::time_point now) {
  const std::size_t erased =
      std::erase_if(m_offers, [&](const auto& item) { return now - item.second.seen > m_recent; });
  if (erased > 0) ++m_version;
}

bool WorkerOffers::can_meet(const Requirement& requirement) const {
  for (const auto& [id, offer] : m_offers)
    if (requirement.met_by(offer.provides)) return true;
  return false;
}

std::vector<std::pair<std::string, Provides>> WorkerOffers::offers() const {
  std::vector<std::pair<std::string, Provides>> out;
  out.reserve(m_offers.size());
  for (const auto& [id, offer] : m_offers) out.emplace_back(id, offer.provides);
  return out;
}

}  // namespace scale::detail
