// Stable matching of waiting managers and idle workers (src/core/stable_match.hpp).

#include "core/stable_match.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace scale::detail {

namespace {

constexpr std::size_t unranked = static_cast<std::size_t>(-1);

std::string count_text(std::size_t count, const char* one, const char* many) {
  return std::to_string(count) + " " + (count == 1 ? one : many);
}

[[noreturn]] void index_out_of_range(const std::string& entry, std::size_t index, std::size_t count, const char* one,
                                     const char* many) {
  throw std::invalid_argument(entry + " lists " + one + " " + std::to_string(index) + ", but there " +
                              (count == 1 ? "is " : "are ") + count_text(count, one, many) +
                              "; list only indices below " + std::to_string(count));
}

[[noreturn]] void listed_twice(const std::string& entry, std::size_t index, const char* one) {
  throw std::invalid_argument(entry + " lists " + one + " " + std::to_string(index) + " twice; rank each one once");
}

/// 0: same host, 1: same site, 2: the rest. An empty host or site is unknown and matches nothing.
int path_tier(const MatchRequest& manager, const MatchProvider& worker) noexcept {
  if (!manager.host.empty() && manager.host == worker.host) return 0;
  if (!manager.site.empty() && manager.site == worker.site) return 1;
  return 2;
}

}  // namespace

std::span<const std::size_t> StableMatching::providers_of(std::size_t request) const {
  if (request >= requests())
    throw std::out_of_range("StableMatching::providers_of(" + std::to_string(request) + "): there are " +
                            count_text(requests(), "request", "requests"));
  return std::span<const std::size_t>(matched).subspan(first[request], first[request + 1] - first[request]);
}

StableMatching stable_match(const std::vector<std::vector<std::size_t>>& requests,
                            const std::vector<std::vector<std::size_t>>& providers,
                            const std::vector<std::size_t>& capacities) {
  const std::size_t request_count = requests.size();
  const std::size_t provider_count = providers.size();
  if (capacities.size() != request_count)
    throw std::invalid_argument("stable_match: capacities has " + count_text(capacities.size(), "entry", "entries") +
                                " for " + count_text(request_count, "request", "requests") +
                                "; give one capacity per request");

  // rank[j * request_count + i]: where provider j ranks request i (0 best), or unranked.
  std::vector<std::size_t> rank(provider_count * request_count, unranked);
  for (std::size_t j = 0; j < provider_count; ++j) {
    for (std::size_t position = 0; position < providers[j].size(); ++position) {
      const std::size_t i = providers[j][position];
      auto entry = [j] { return "stable_match: providers[" + std::to_string(j) + "]"; };
      if (i >= request_count) index_out_of_range(entry(), i, request_count, "request", "requests");
      std::size_t& slot = rank[j * request_count + i];
      if (slot != unranked) listed_twice(entry(), i, "request");
      slot = position;
    }
  }
  {
    // last_listed_by[j] = i + 1 while checking requests[i]: catches a provider listed twice.
    std::vector<std::size_t> last_listed_by(provider_count, 0);
    for (std::size_t i = 0; i < request_count; ++i) {
      auto entry = [i] { return "stable_match: requests[" + std::to_string(i) + "]"; };
      for (const std::size_t j : requests[i]) {
        if (j >= provider_count) index_out_of_range(entry(), j, provider_count, "provider", "providers");
        if (last_listed_by[j] == i + 1) listed_twice(entry(), j, "provider");
        last_listed_by[j] = i + 1;
      }
    }
  }

  StableMatching result;
  result.request_of.assign(provider_count, StableMatching::none);
  std::vector<std::size_t> next(request_count, 0);  // the next position request i proposes to
  std::vector<std::size_t> held(request_count, 0);  // how many providers hold request i now
  std::vector<std::size_t> waiting;                 // requests that may have proposals to make
  std::vector<bool> is_waiting(request_count, true);
  waiting.reserve(request_count);
  for (std::size_t i = request_count; i-- > 0;) waiting.push_back(i);  // popped in index order

  // NOTE: the request-optimal stable matching is the same whatever order the proposals are made
  // in (McVitie & Wilson 1971), so this order only has to be fixed, not fair.
  while (!waiting.empty()) {
    const std::size_t i = waiting.back();
    waiting.pop_back();
    is_waiting[i] = false;
    const auto& list = requests[i];
    while (held[i] < capacities[i] && next[i] < list.size()) {
      const std::size_t j = list[next[i]++];
      const std::size_t rank_of_i = rank[j * request_count + i];
      if (rank_of_i == unranked) continue;  // j does not accept i
      const std::size_t current = result.request_of[j];
      if (current == StableMatching::none) {
        result.request_of[j] = i;
        ++held[i];
      } else if (rank_of_i < rank[j * request_count + current]) {
        result.request_of[j] = i;
        ++held[i];
        --held[current];  // it has room again: let it propose further down its list
        if (!is_waiting[current]) {
          is_waiting[current] = true;
          waiting.push_back(current);
        }
      }
    }
  }

  // Each request's providers in its own order: walk the part of its list it proposed to.
  result.first.resize(request_count + 1, 0);
  std::size_t total = 0;
  for (std::size_t i = 0; i < request_count; ++i) total += held[i];
  result.matched.reserve(total);
  for (std::size_t i = 0; i < request_count; ++i) {
    result.first[i] = result.matched.size();
    for (std::size_t position = 0; position < next[i]; ++position) {
      const std::size_t j = requests[i][position];
      if (result.request_of[j] == i) result.matched.push_back(j);
    }
  }
  result.first[request_count] = result.matched.size();
  return result;
}

MatchRankings path_rankings(const std::vector<MatchRequest>& managers, const std::vector<MatchProvider>& workers) {
  const std::size_t manager_count = managers.size();
  for (std::size_t i = 0; i < manager_count; ++i) {
    const double share = managers[i].share_served;
    if (!std::isfinite(share) || share < 0) {
      std::ostringstream message;
      message << "path_rankings: managers[" << i << "] (id '" << managers[i].id << "') has share_served " << share
              << "; give the fraction of worker time it has had, a finite number >= 0";
      throw std::invalid_argument(message.str());
    }
  }

  MatchRankings rankings;
  rankings.requests.resize(manager_count);
  rankings.providers.resize(workers.size());
  rankings.capacities.resize(manager_count);
  for (std::size_t i = 0; i < manager_count; ++i) rankings.capacities[i] = managers[i].wanted;

  std::vector<std::size_t> last_listed_by(manager_count, 0);  // = j + 1 while reading workers[j]
  for (std::size_t j = 0; j < workers.size(); ++j) {
    auto entry = [j] { return "path_rankings: workers[" + std::to_string(j) + "].compatible"; };
    auto& ranked = rankings.providers[j];
    ranked.reserve(workers[j].compatible.size());
    for (const std::size_t i : workers[j].compatible) {
      if (i >= manager_count) index_out_of_range(entry(), i, manager_count, "manager", "managers");
      if (last_listed_by[i] == j + 1) listed_twice(entry(), i, "manager");
      last_listed_by[i] = j + 1;
      ranked.push_back(i);
      rankings.requests[i].push_back(j);
    }
    const MatchProvider& worker = workers[j];
    std::sort(ranked.begin(), ranked.end(), [&](std::size_t a, std::size_t b) {
      const int tier_a = path_tier(managers[a], worker);
      const int tier_b = path_tier(managers[b], worker);
      if (tier_a != tier_b) return tier_a < tier_b;
      if (managers[a].share_served != managers[b].share_served)
        return managers[a].share_served < managers[b].share_served;
      if (managers[a].id != managers[b].id) return managers[a].id < managers[b].id;
      return a < b;
    });
  }
  for (std::size_t i = 0; i < manager_count; ++i) {
    const MatchRequest& manager = managers[i];
    std::sort(rankings.requests[i].begin(), rankings.requests[i].end(), [&](std::size_t a, std::size_t b) {
      const int tier_a = path_tier(manager, workers[a]);
      const int tier_b = path_tier(manager, workers[b]);
      if (tier_a != tier_b) return tier_a < tier_b;
      if (workers[a].id != workers[b].id) return workers[a].id < workers[b].id;
      return a < b;
    });
  }
  return rankings;
}

StableMatching stable_match(const MatchRankings& rankings) {
  return stable_match(rankings.requests, rankings.providers, rankings.capacities);
}

}  // namespace scale::detail
