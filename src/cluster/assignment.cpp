// Assignments of idle workers to managers (cluster/assignment.hpp).

#include "cluster/assignment.hpp"

#include <algorithm>
#include <cmath>
#include <exception>

#include <nlohmann/json.hpp>

#include "core/stable_match.hpp"

namespace scale::detail {

std::size_t ManagerDemand::total() const noexcept {
  std::size_t sum = 0;
  for (const auto& [name, count] : queued) sum += count;
  return sum;
}

std::string encode_manager_demand(const ManagerDemand& demand) {
  return nlohmann::json{{"host", demand.host}, {"site", demand.site}, {"queued", demand.queued}, {"share", demand.share},
                        {"writes", demand.writes}}
      .dump();
}

std::optional<ManagerDemand> decode_manager_demand(const std::string& text) {
  try {
    const auto json = nlohmann::json::parse(text);
    ManagerDemand demand;
    demand.host = json.value("host", "");
    demand.site = json.value("site", "");
    if (json.contains("queued") && json["queued"].is_object())
      demand.queued = json["queued"].get<std::map<std::string, std::size_t>>();
    demand.share = json.value("share", 0.0);
    if (!std::isfinite(demand.share) || demand.share < 0) demand.share = 0;
    demand.writes = json.value("writes", std::uint64_t{0});
    return demand;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

namespace {

/// Caps each manager's `wanted` at an even share of `idle` workers, what one wants less of going
/// to the others (water filling): so one scan never hands every idle worker to one manager while
/// another waits, and no worker is left out that some manager could use.
void even_shares(std::vector<MatchRequest>& managers, std::size_t idle) {
  std::vector<std::size_t> wants(managers.size()), given(managers.size(), 0);
  for (std::size_t i = 0; i < managers.size(); ++i) wants[i] = managers[i].wanted;
  std::vector<std::size_t> by_share(managers.size());
  for (std::size_t i = 0; i < by_share.size(); ++i) by_share[i] = i;
  std::stable_sort(by_share.begin(), by_share.end(), [&](std::size_t x, std::size_t y) {
    return managers[x].share_served < managers[y].share_served;
  });
  std::size_t left = idle;
  for (;;) {
    std::size_t open = 0;
    for (std::size_t i = 0; i < managers.size(); ++i)
      if (given[i] < wants[i]) ++open;
    if (open == 0 || left == 0) break;
    // Each manager still wanting gets an even part of what is left, those served less (then by
    // id) one more when it does not divide.
    const std::size_t part = left / open, extra = left % open;
    std::size_t k = 0;
    for (const std::size_t i : by_share) {
      if (left == 0) break;
      if (given[i] >= wants[i]) continue;
      const std::size_t offer = part + (k++ < extra ? 1 : 0);
      const std::size_t take = std::min(offer, wants[i] - given[i]);
      given[i] += take;
      left -= take;
    }
  }
  for (std::size_t i = 0; i < managers.size(); ++i) managers[i].wanted = given[i];
}

/// How far a worker is from a manager, as path_rankings ranks them (core/stable_match.hpp): 0 on
/// the same host, 1 on the same site, 2 otherwise; an empty host or site matches nothing.
int distance(const MatchRequest& manager, const MatchProvider& worker) {
  if (!manager.host.empty() && manager.host == worker.host) return 0;
  if (!manager.site.empty() && manager.site == worker.site) return 1;
  return 2;
}

}  // namespace

std::map<std::string, std::string> assign_idle_workers(const std::map<std::string, ManagerDemand>& demands,
                                                       const std::map<std::string, ManagerClasses>& directory,
                                                       const std::vector<IdleWorker>& workers) {
  // The managers waiting, with the requirement of each class they have queued work in.
  std::vector<MatchRequest> managers;
  std::vector<std::vector<const Requirement*>> needs;
  static const Requirement nothing;
  for (const auto& [id, demand] : demands) {
    const std::size_t wanted = demand.total();
    if (wanted == 0) continue;
    std::vector<const Requirement*> classes;
    const auto entry = directory.find(id);
    for (const auto& [name, count] : demand.queued) {
      if (count == 0) continue;
      if (entry != directory.end()) {
        const auto at = entry->second.classes.find(name);
        if (at != entry->second.classes.end()) {
          classes.push_back(&at->second);
          continue;
        }
      }
      if (name == any_class) classes.push_back(&nothing);
    }
    if (classes.empty()) continue;
    managers.push_back(MatchRequest{id, demand.host, demand.site, demand.share, wanted});
    needs.push_back(std::move(classes));
  }
  if (managers.size() < 2 || workers.empty()) return {};
  even_shares(managers, workers.size());

  std::vector<MatchProvider> providers;
  providers.reserve(workers.size());
  for (const IdleWorker& worker : workers) {
    MatchProvider provider{worker.id, worker.host, worker.site, {}};
    for (std::size_t i = 0; i < managers.size(); ++i)
      for (const Requirement* requirement : needs[i])
        if (requirement->met_by(worker.provides)) {
          provider.compatible.push_back(i);
          break;
        }
    providers.push_back(std::move(provider));
  }

  const StableMatching matching = stable_match(path_rankings(managers, providers));
  std::map<std::string, std::string> assigned;
  for (std::size_t j = 0; j < providers.size(); ++j) {
    const std::size_t i = matching.request_of[j];
    if (i == StableMatching::none) continue;
    // Kept only when the worker is nearer its manager than another it could serve: among equally
    // near managers the worker's round robin already serves each in turn, item by item, where an
    // assignment would favour one for two scans at a time.
    const int near = distance(managers[i], providers[j]);
    const bool nearer = std::any_of(providers[j].compatible.begin(), providers[j].compatible.end(),
                                    [&](std::size_t other) { return distance(managers[other], providers[j]) > near; });
    if (nearer) assigned.emplace(providers[j].id, managers[i].id);
  }
  return assigned;
}

}  // namespace scale::detail
