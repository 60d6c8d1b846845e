// Stable matching of waiting managers and idle workers: properties over random instances, checked
// against brute force on small ones, and the path rankings on hand-made clusters.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/stable_match.hpp"

using scale::detail::MatchProvider;
using scale::detail::MatchRankings;
using scale::detail::MatchRequest;
using scale::detail::path_rankings;
using scale::detail::stable_match;
using scale::detail::StableMatching;

namespace {

using Rankings = std::vector<std::vector<std::size_t>>;
constexpr std::size_t none = StableMatching::none;

struct Instance {
  Rankings requests;
  Rankings providers;
  std::vector<std::size_t> capacities;
};

// std::mt19937_64 is the same everywhere; the standard's distributions are not, so a printed seed
// reproduces a failure on any standard library only with these two.
std::size_t below(std::mt19937_64& rng, std::size_t bound) { return static_cast<std::size_t>(rng() % bound); }

void shuffle(std::vector<std::size_t>& values, std::mt19937_64& rng) {
  for (std::size_t n = values.size(); n > 1; --n) std::swap(values[n - 1], values[below(rng, n)]);
}

/// Each side lists a random subset of the other in a random order; capacities 0 to
/// `max_capacity`. When `opposed`, every pair is acceptable, each provider ranks highest the
/// requests that rank it lowest, every request has room for at least one, and there are about as
/// many providers as places: the two sides disagree and compete, which gives several stable
/// matchings to choose from (independent random rankings seldom do).
Instance random_instance(std::uint64_t seed, std::size_t max_requests, std::size_t max_providers, bool opposed = false,
                         std::size_t max_capacity = 3) {
  std::mt19937_64 rng(seed);
  Instance instance;
  const std::size_t request_count = opposed ? 2 + below(rng, max_requests - 1) : below(rng, max_requests + 1);
  std::size_t places = 0;
  for (std::size_t i = 0; i < request_count; ++i) {
    instance.capacities.push_back(opposed ? 1 + below(rng, max_capacity) : below(rng, max_capacity + 1));
    places += instance.capacities.back();
  }
  const std::size_t provider_count = opposed ? std::min(max_providers, places + below(rng, 2))
                                             : below(rng, max_providers + 1);
  const std::size_t accept_percent[] = {30, 60, 90, 100};
  const std::size_t percent = opposed ? 100 : accept_percent[below(rng, 4)];
  auto subset = [&](std::size_t count) {
    std::vector<std::size_t> listed;
    for (std::size_t k = 0; k < count; ++k)
      if (below(rng, 100) < percent) listed.push_back(k);
    shuffle(listed, rng);
    return listed;
  };
  for (std::size_t i = 0; i < request_count; ++i) instance.requests.push_back(subset(provider_count));
  for (std::size_t j = 0; j < provider_count; ++j) instance.providers.push_back(subset(request_count));
  if (opposed) {
    for (std::size_t j = 0; j < provider_count; ++j) {
      auto position_of_j = [&](std::size_t i) {
        const auto& wanted = instance.requests[i];
        return std::find(wanted.begin(), wanted.end(), j) - wanted.begin();
      };
      // Stable, so requests that rank j alike keep their random order.
      std::stable_sort(instance.providers[j].begin(), instance.providers[j].end(),
                       [&](std::size_t a, std::size_t b) { return position_of_j(a) > position_of_j(b); });
    }
  }
  return instance;
}

/// Both sides' positions: request_rank[i][j] (none when i does not list j), provider_rank[j][i].
struct Ranks {
  Rankings request_rank;
  Rankings provider_rank;

  explicit Ranks(const Instance& instance)
      : request_rank(instance.requests.size(), std::vector<std::size_t>(instance.providers.size(), none)),
        provider_rank(instance.providers.size(), std::vector<std::size_t>(instance.requests.size(), none)) {
    for (std::size_t i = 0; i < instance.requests.size(); ++i)
      for (std::size_t k = 0; k < instance.requests[i].size(); ++k) request_rank[i][instance.requests[i][k]] = k;
    for (std::size_t j = 0; j < instance.providers.size(); ++j)
      for (std::size_t k = 0; k < instance.providers[j].size(); ++k) provider_rank[j][instance.providers[j][k]] = k;
  }

  bool mutual(std::size_t i, std::size_t j) const { return request_rank[i][j] != none && provider_rank[j][i] != none; }
};

/// For each provider, its request or none.
using Assignment = std::vector<std::size_t>;

/// What is wrong with the result's shape, or "": sizes, the two views agreeing, capacities, each
/// provider used once, only mutually acceptable pairs, each request's providers best first.
std::string shape_problem(const Instance& instance, const Ranks& ranks, const StableMatching& result) {
  const std::size_t request_count = instance.requests.size();
  const std::size_t provider_count = instance.providers.size();
  if (result.request_of.size() != provider_count) return "request_of is not one per provider";
  if (result.first.size() != request_count + 1 || result.requests() != request_count)
    return "first is not one per request plus one";
  if (result.first.back() != result.matched.size()) return "first does not end at matched's end";
  std::vector<std::size_t> times_matched(provider_count, 0);
  for (std::size_t i = 0; i < request_count; ++i) {
    const auto got = result.providers_of(i);
    if (got.size() > instance.capacities[i]) return "request " + std::to_string(i) + " got more than its capacity";
    for (std::size_t k = 0; k < got.size(); ++k) {
      const std::size_t j = got[k];
      if (j >= provider_count) return "request " + std::to_string(i) + " got a provider out of range";
      if (++times_matched[j] > 1) return "provider " + std::to_string(j) + " serves two requests";
      if (result.request_of[j] != i) return "provider " + std::to_string(j) + ": request_of disagrees";
      if (!ranks.mutual(i, j))
        return "the pair " + std::to_string(i) + "-" + std::to_string(j) + " is not mutually acceptable";
      if (k > 0 && ranks.request_rank[i][got[k - 1]] > ranks.request_rank[i][j])
        return "request " + std::to_string(i) + "'s providers are not best first";
    }
  }
  for (std::size_t j = 0; j < provider_count; ++j)
    if (result.request_of[j] != none && times_matched[j] == 0)
      return "provider " + std::to_string(j) + " has a request that does not list it as matched";
  return "";
}

/// Finds a blocking pair of an assignment. It keeps its buffers from one call to the next, since
/// the brute force below asks it about every assignment there is.
class BlockingPairs {
 public:
  BlockingPairs(const Instance& instance, const Ranks& ranks)
      : m_instance(instance), m_ranks(ranks), m_held(instance.requests.size()), m_worst(instance.requests.size()) {}

  /// Whether request i and provider j, listed by each other and not matched together, would both
  /// rather be: i has room or ranks j above its worst provider, and j is free or ranks i above
  /// its request. Returns the first such pair found as {i, j}.
  std::optional<std::pair<std::size_t, std::size_t>> find(const Assignment& assignment) {
    std::fill(m_held.begin(), m_held.end(), 0);
    std::fill(m_worst.begin(), m_worst.end(), 0);
    for (std::size_t j = 0; j < assignment.size(); ++j) {
      const std::size_t i = assignment[j];
      if (i == none) continue;
      ++m_held[i];
      m_worst[i] = std::max(m_worst[i], m_ranks.request_rank[i][j]);
    }
    for (std::size_t i = 0; i < m_held.size(); ++i) {
      for (std::size_t j = 0; j < assignment.size(); ++j) {
        if (assignment[j] == i || !m_ranks.mutual(i, j)) continue;
        const bool request_wants = m_held[i] < m_instance.capacities[i] ||
                                   (m_held[i] > 0 && m_ranks.request_rank[i][j] < m_worst[i]);
        const bool provider_wants = assignment[j] == none ||
                                    m_ranks.provider_rank[j][i] < m_ranks.provider_rank[j][assignment[j]];
        if (request_wants && provider_wants) return std::pair(i, j);
      }
    }
    return std::nullopt;
  }

 private:
  const Instance& m_instance;
  const Ranks& m_ranks;
  std::vector<std::size_t> m_held;   // per request: how many providers it has
  std::vector<std::size_t> m_worst;  // per request: the worst rank among them
};

/// A blocking pair of `assignment` in words, or "" when it is stable.
std::string blocking_pair(const Instance& instance, const Ranks& ranks, const Assignment& assignment) {
  const auto found = BlockingPairs(instance, ranks).find(assignment);
  if (!found) return "";
  return "request " + std::to_string(found->first) + " and provider " + std::to_string(found->second) + " block";
}

/// Every stable matching, by trying every assignment of providers to mutually acceptable requests
/// within the capacities.
std::vector<Assignment> all_stable_matchings(const Instance& instance, const Ranks& ranks) {
  std::vector<Assignment> stable;
  Assignment assignment(instance.providers.size(), none);
  std::vector<std::size_t> held(instance.requests.size(), 0);
  BlockingPairs blocking(instance, ranks);
  auto assign = [&](auto& self, std::size_t j) -> void {
    if (j == assignment.size()) {
      if (!blocking.find(assignment)) stable.push_back(assignment);
      return;
    }
    assignment[j] = none;
    self(self, j + 1);
    for (std::size_t i = 0; i < instance.requests.size(); ++i) {
      if (!ranks.mutual(i, j) || held[i] == instance.capacities[i]) continue;
      assignment[j] = i;
      ++held[i];
      self(self, j + 1);
      --held[i];
    }
    assignment[j] = none;
  };
  assign(assign, 0);
  return stable;
}

/// Request i's ranks of its providers in `assignment`, best first.
std::vector<std::size_t> ranks_held(const Ranks& ranks, const Assignment& assignment, std::size_t i) {
  std::vector<std::size_t> held;
  for (std::size_t j = 0; j < assignment.size(); ++j)
    if (assignment[j] == i) held.push_back(ranks.request_rank[i][j]);
  std::sort(held.begin(), held.end());
  return held;
}

bool same(const StableMatching& a, const StableMatching& b) {
  return a.request_of == b.request_of && a.first == b.first && a.matched == b.matched;
}

std::string refusal(const Rankings& requests, const Rankings& providers, const std::vector<std::size_t>& capacities) {
  try {
    stable_match(requests, providers, capacities);
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "accepted";
}

std::string refusal(const std::vector<MatchRequest>& managers, const std::vector<MatchProvider>& workers) {
  try {
    path_rankings(managers, workers);
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "accepted";
}

}  // namespace

TEST_CASE("stable_match leaves no blocking pair and respects capacities and acceptability", "[stable_match]") {
  for (std::uint64_t seed = 1; seed <= 2000; ++seed) {
    CAPTURE(seed);
    const Instance instance = random_instance(seed, 8, 20, seed % 2 == 0);
    const Ranks ranks(instance);
    const StableMatching result = stable_match(instance.requests, instance.providers, instance.capacities);
    REQUIRE(shape_problem(instance, ranks, result) == "");
    REQUIRE(blocking_pair(instance, ranks, result.request_of) == "");
  }
}

TEST_CASE("stable_match gives the same matching for the same input, however the requests are numbered",
          "[stable_match]") {
  for (std::uint64_t seed = 1; seed <= 600; ++seed) {
    CAPTURE(seed);
    const Instance instance = random_instance(seed, 8, 20, seed % 2 == 0);
    const StableMatching result = stable_match(instance.requests, instance.providers, instance.capacities);
    REQUIRE(same(stable_match(instance.requests, instance.providers, instance.capacities), result));

    // Renumber the requests (old i becomes order[i]): the request-optimal stable matching is
    // unique, so each provider must serve the same request under its new number.
    std::mt19937_64 rng(seed ^ 0x5eedULL);
    std::vector<std::size_t> order(instance.requests.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    shuffle(order, rng);
    Instance renumbered;
    renumbered.requests.resize(order.size());
    renumbered.capacities.resize(order.size());
    for (std::size_t i = 0; i < order.size(); ++i) {
      renumbered.requests[order[i]] = instance.requests[i];
      renumbered.capacities[order[i]] = instance.capacities[i];
    }
    for (auto listed : instance.providers) {
      for (auto& i : listed) i = order[i];
      renumbered.providers.push_back(listed);
    }
    const StableMatching again = stable_match(renumbered.requests, renumbered.providers, renumbered.capacities);
    for (std::size_t j = 0; j < instance.providers.size(); ++j) {
      const std::size_t was = result.request_of[j];
      REQUIRE(again.request_of[j] == (was == none ? none : order[was]));
    }
  }
}

// Optimality for the proposing side. In the "related marriage market" a request of capacity q is
// q copies, copy k filled with its k-th best provider, and a matching is stable exactly when that
// marriage matching is; there the proposing side's matching gives each copy a partner at least as
// good as in any stable matching (Roth & Sotomayor, "Two-Sided Matching", 1990, ch. 5), and every
// stable matching fills the same number of places of each request ("rural hospitals"). So the
// criterion checked: against every stable matching M, each request i gets as many providers as in
// M, and for every k its k-th best provider is one it ranks at least as high as its k-th best in M.
TEST_CASE("stable_match gives every request at least what it has in any stable matching, by brute force",
          "[stable_match]") {
  std::size_t with_several = 0;
  for (std::uint64_t seed = 1; seed <= 1200; ++seed) {
    CAPTURE(seed);
    const Instance instance = random_instance(seed, 4, 5, seed % 2 == 0, 1 + seed / 2 % 2);
    const Ranks ranks(instance);
    const StableMatching result = stable_match(instance.requests, instance.providers, instance.capacities);
    const auto stable = all_stable_matchings(instance, ranks);
    REQUIRE(std::find(stable.begin(), stable.end(), result.request_of) != stable.end());
    if (stable.size() > 1) ++with_several;
    for (const Assignment& other : stable) {
      bool some_request_worse_there = false;
      for (std::size_t i = 0; i < instance.requests.size(); ++i) {
        CAPTURE(i);
        const auto got = ranks_held(ranks, result.request_of, i);
        const auto there = ranks_held(ranks, other, i);
        REQUIRE(got.size() == there.size());
        for (std::size_t k = 0; k < got.size(); ++k) {
          REQUIRE(got[k] <= there[k]);
          if (got[k] < there[k]) some_request_worse_there = true;
        }
      }
      // So the order is strict: any other stable matching is worse for some request.
      REQUIRE(some_request_worse_there == (other != result.request_of));
    }
  }
  // The check above can fail only where there is a choice: enough instances must offer one.
  CAPTURE(with_several);
  REQUIRE(with_several >= 150);  // 310 of the 600 opposed instances offer a choice
}

TEST_CASE("stable_match on hand-made rankings: proposals, displacement and capacity 0", "[stable_match]") {
  // Both requests want provider 0 most; provider 0 prefers request 1, so request 0 takes its
  // second choice.
  const StableMatching contested = stable_match({{0, 1}, {0, 1}}, {{1, 0}, {0, 1}}, {1, 1});
  REQUIRE(contested.request_of == std::vector<std::size_t>{1, 0});
  REQUIRE(std::vector<std::size_t>(contested.providers_of(0).begin(), contested.providers_of(0).end()) ==
          std::vector<std::size_t>{1});

  // A request of capacity 2 gets its two providers best first, not in index order.
  const StableMatching two = stable_match({{2, 0, 1}}, {{0}, {0}, {0}}, {2});
  REQUIRE(std::vector<std::size_t>(two.providers_of(0).begin(), two.providers_of(0).end()) ==
          std::vector<std::size_t>{2, 0});
  REQUIRE(two.request_of == std::vector<std::size_t>{0, none, 0});

  // One-sided acceptance is no match; capacity 0 takes nothing.
  REQUIRE(stable_match({{0}}, {{}}, {1}).request_of == std::vector<std::size_t>{none});
  REQUIRE(stable_match({{0}}, {{0}}, {0}).request_of == std::vector<std::size_t>{none});

  // Nothing on either side.
  const StableMatching empty = stable_match({}, {}, {});
  REQUIRE(empty.requests() == 0);
  REQUIRE(empty.matched.empty());
  REQUIRE_THROWS_AS(empty.providers_of(0), std::out_of_range);
}

TEST_CASE("stable_match names the entry it refuses", "[stable_match]") {
  REQUIRE_THAT(refusal({{0}, {0}}, {{0, 1}}, {1}), Catch::Contains("capacities has 1 entry for 2 requests"));
  REQUIRE_THAT(refusal({{0, 3}}, {{0}, {0}}, {1}),
               Catch::Contains("requests[0] lists provider 3") && Catch::Contains("2 providers"));
  REQUIRE_THAT(refusal({{0}}, {{0, 1}}, {1}), Catch::Contains("providers[0] lists request 1"));
  REQUIRE_THAT(refusal({{1, 0, 1}}, {{0}, {0}}, {1}), Catch::Contains("requests[0] lists provider 1 twice"));
  REQUIRE_THAT(refusal({{0}, {0}}, {{1, 1}}, {1, 1}), Catch::Contains("providers[0] lists request 1 twice"));
  REQUIRE(refusal({{0}}, {{0}}, {1}) == "accepted");
}

TEST_CASE("path_rankings puts the same host first, then the same site, then the rest", "[stable_match]") {
  const std::vector<MatchRequest> managers = {{"manager", "h1", "eu", 0.0, 1}};
  const std::vector<MatchProvider> workers = {
      {"w-a", "h9", "us", {0}},  // another site
      {"w-b", "h2", "eu", {0}},  // same site, another host
      {"w-c", "h1", "eu", {0}},  // same host
  };
  const MatchRankings rankings = path_rankings(managers, workers);
  REQUIRE(rankings.requests == Rankings{{2, 1, 0}});
  REQUIRE(rankings.capacities == std::vector<std::size_t>{1});
  REQUIRE(stable_match(rankings).request_of == std::vector<std::size_t>{none, none, 0});

  auto wants_two = managers;
  wants_two[0].wanted = 2;
  REQUIRE(stable_match(path_rankings(wants_two, workers)).request_of == std::vector<std::size_t>{none, 0, 0});

  // Another site is still better than no worker at all.
  const std::vector<MatchProvider> far = {{"w-far", "h7", "us", {0}}};
  REQUIRE(stable_match(path_rankings(managers, far)).request_of == std::vector<std::size_t>{0});

  // An unknown host or site matches nothing, not another unknown one.
  const std::vector<MatchRequest> unplaced = {{"manager", "", "", 0.0, 1}};
  const std::vector<MatchProvider> mixed = {{"w-a", "", "", {0}}, {"w-b", "h1", "eu", {0}}};
  REQUIRE(path_rankings(unplaced, mixed).requests == Rankings{{0, 1}});  // both "the rest": by id
  const std::vector<MatchRequest> in_eu = {{"manager", "", "eu", 0.0, 1}};
  REQUIRE(path_rankings(in_eu, mixed).requests == Rankings{{1, 0}});
}

TEST_CASE("a worker prefers the manager that has been served less when paths tie", "[stable_match]") {
  // Two managers on other hosts of the worker's site, one worker, both want it.
  const std::vector<MatchProvider> worker = {{"w", "h0", "eu", {0, 1}}};
  const std::vector<MatchRequest> served_more_first = {{"m-a", "h1", "eu", 0.6, 1}, {"m-b", "h2", "eu", 0.2, 1}};
  REQUIRE(path_rankings(served_more_first, worker).providers == Rankings{{1, 0}});
  REQUIRE(stable_match(path_rankings(served_more_first, worker)).request_of == std::vector<std::size_t>{1});

  // Equal shares: the lower id, then the lower index.
  const std::vector<MatchRequest> equal = {{"m-b", "h1", "eu", 0.5, 1}, {"m-a", "h2", "eu", 0.5, 1}};
  REQUIRE(path_rankings(equal, worker).providers == Rankings{{1, 0}});
  const std::vector<MatchRequest> twins = {{"m", "h1", "eu", 0.5, 1}, {"m", "h2", "eu", 0.5, 1}};
  REQUIRE(path_rankings(twins, worker).providers == Rankings{{0, 1}});

  // A shorter path still comes before a smaller share.
  const std::vector<MatchRequest> near_but_served = {{"m-far", "h5", "us", 0.0, 1}, {"m-near", "h0", "eu", 0.9, 1}};
  REQUIRE(stable_match(path_rankings(near_but_served, worker)).request_of == std::vector<std::size_t>{1});
}

TEST_CASE("a worker's own preference for a near manager beats a far manager's larger want", "[stable_match]") {
  // Manager A (h1) wants two, B (h2) one; the worker on h2 would rather serve B.
  const std::vector<MatchRequest> managers = {{"A", "h1", "eu", 0.0, 2}, {"B", "h2", "eu", 0.0, 1}};
  const std::vector<MatchProvider> workers = {{"w1", "h1", "eu", {0, 1}}, {"w2", "h2", "eu", {0, 1}}};
  const StableMatching result = stable_match(path_rankings(managers, workers));
  REQUIRE(result.request_of == std::vector<std::size_t>{0, 1});
}

TEST_CASE("nobody starves: a request with room gets an acceptable idle worker that nobody else wants",
          "[stable_match]") {
  // A wants three and is on the workers' site; B wants one and can also run on a far worker that
  // only B can use. B loses every contested worker to A but still gets the far one.
  const std::vector<MatchRequest> managers = {{"A", "h1", "eu", 0.9, 3}, {"B", "h8", "us", 0.0, 1}};
  const std::vector<MatchProvider> workers = {
      {"w0", "h2", "eu", {0, 1}},
      {"w1", "h3", "eu", {0, 1}},
      {"w2", "h4", "eu", {0, 1}},
      {"w3", "h9", "ap", {1}},
  };
  const StableMatching result = stable_match(path_rankings(managers, workers));
  REQUIRE(result.request_of == std::vector<std::size_t>{0, 0, 0, 1});

  // The same holds over random instances: a provider nobody else lists goes to the one request
  // that lists it (and that it accepts) unless that request is full of providers it ranks higher.
  for (std::uint64_t seed = 1; seed <= 1000; ++seed) {
    CAPTURE(seed);
    const Instance instance = random_instance(seed, 6, 12);
    const Ranks ranks(instance);
    const StableMatching matching = stable_match(instance.requests, instance.providers, instance.capacities);
    for (std::size_t j = 0; j < instance.providers.size(); ++j) {
      std::size_t listed_by = 0, only = none;
      for (std::size_t i = 0; i < instance.requests.size(); ++i)
        if (ranks.request_rank[i][j] != none) ++listed_by, only = i;
      if (listed_by != 1 || !ranks.mutual(only, j) || matching.request_of[j] == only) continue;
      CAPTURE(j, only);
      const auto got = matching.providers_of(only);
      REQUIRE(got.size() == instance.capacities[only]);
      for (const std::size_t better : got) REQUIRE(ranks.request_rank[only][better] < ranks.request_rank[only][j]);
    }
  }
}

TEST_CASE("path_rankings lists exactly the compatible pairs, each side in its order", "[stable_match]") {
  const char* hosts[] = {"", "h1", "h2", "h3"};
  const char* sites[] = {"", "eu", "us"};
  const double shares[] = {0.0, 0.25, 0.5};
  for (std::uint64_t seed = 1; seed <= 300; ++seed) {
    CAPTURE(seed);
    std::mt19937_64 rng(seed);
    std::vector<MatchRequest> managers(below(rng, 6));
    for (std::size_t i = 0; i < managers.size(); ++i)
      managers[i] = {"m" + std::to_string(below(rng, 4)), hosts[below(rng, 4)], sites[below(rng, 3)],
                     shares[below(rng, 3)], below(rng, 4)};
    std::vector<MatchProvider> workers(below(rng, 10));
    for (auto& worker : workers) {
      worker = {"w" + std::to_string(below(rng, 6)), hosts[below(rng, 4)], sites[below(rng, 3)], {}};
      for (std::size_t i = 0; i < managers.size(); ++i)
        if (below(rng, 3) != 0) worker.compatible.push_back(i);
      shuffle(worker.compatible, rng);
    }
    const MatchRankings rankings = path_rankings(managers, workers);
    REQUIRE(rankings.requests.size() == managers.size());
    REQUIRE(rankings.providers.size() == workers.size());

    auto tier = [&](std::size_t i, std::size_t j) {
      if (!managers[i].host.empty() && managers[i].host == workers[j].host) return 0;
      if (!managers[i].site.empty() && managers[i].site == workers[j].site) return 1;
      return 2;
    };
    for (std::size_t j = 0; j < workers.size(); ++j) {
      auto expected = workers[j].compatible;
      std::sort(expected.begin(), expected.end());
      auto listed = rankings.providers[j];
      std::sort(listed.begin(), listed.end());
      REQUIRE(listed == expected);
      const auto& order = rankings.providers[j];
      for (std::size_t k = 1; k < order.size(); ++k) {
        const std::size_t a = order[k - 1], b = order[k];
        const auto key_a = std::tuple(tier(a, j), managers[a].share_served, managers[a].id, a);
        const auto key_b = std::tuple(tier(b, j), managers[b].share_served, managers[b].id, b);
        REQUIRE(key_a < key_b);
      }
    }
    for (std::size_t i = 0; i < managers.size(); ++i) {
      std::vector<std::size_t> expected;
      for (std::size_t j = 0; j < workers.size(); ++j)
        if (std::find(workers[j].compatible.begin(), workers[j].compatible.end(), i) != workers[j].compatible.end())
          expected.push_back(j);
      auto listed = rankings.requests[i];
      std::sort(listed.begin(), listed.end());
      REQUIRE(listed == expected);
      const auto& order = rankings.requests[i];
      for (std::size_t k = 1; k < order.size(); ++k) {
        const std::size_t a = order[k - 1], b = order[k];
        REQUIRE(std::tuple(tier(i, a), workers[a].id, a) < std::tuple(tier(i, b), workers[b].id, b));
      }
      REQUIRE(rankings.capacities[i] == managers[i].wanted);
    }
  }
}

TEST_CASE("path_rankings names the entry it refuses", "[stable_match]") {
  const std::vector<MatchRequest> one = {{"m", "h1", "eu", 0.0, 1}};
  REQUIRE_THAT(refusal(one, {{"w", "h1", "eu", {1}}}),
               Catch::Contains("workers[0].compatible lists manager 1") && Catch::Contains("1 manager"));
  REQUIRE_THAT(refusal(one, {{"w", "h1", "eu", {0}}, {"w2", "h1", "eu", {0, 0}}}),
               Catch::Contains("workers[1].compatible lists manager 0 twice"));
  const std::vector<MatchRequest> nan = {{"m", "h1", "eu", std::numeric_limits<double>::quiet_NaN(), 1}};
  REQUIRE_THAT(refusal(nan, {}), Catch::Contains("managers[0] (id 'm') has share_served"));
  const std::vector<MatchRequest> negative = {{"m", "h1", "eu", -0.5, 1}};
  REQUIRE_THAT(refusal(negative, {}), Catch::Contains("share_served -0.5"));
  REQUIRE(refusal(one, {{"w", "h1", "eu", {0}}}) == "accepted");
}
