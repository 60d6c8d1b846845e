#pragma once
// Stable matching: which idle workers each waiting manager gets at one scan.
//
// Several managers (requests) may compete for the same idle workers (providers). A scan assigns
// them by many-to-one stable matching, requests proposing (Gale–Shapley deferred acceptance, as
// in the college admissions problem with the colleges proposing). Why:
//   - Stable: no manager and worker that are not matched together would both rather be (a
//     "blocking pair"), so nobody has a reason to go around the assignment, and short paths win
//     wherever both sides prefer them.
//   - Requests proposing: of all stable matchings, each request gets the best one it can have
//     (Roth & Sotomayor, "Two-Sided Matching", 1990, ch. 5), so a manager is never worse off for
//     the matcher being there; the workers' rankings still decide between competing managers.
//   - Deterministic: with strict rankings the request-optimal stable matching is unique, so any
//     process that runs the scan on the same input writes the same assignment.
//   - A pure function of indices: the cluster's matcher (and any test) gives it rankings and
//     capacities; path_rankings builds those from hosts, sites and shares.
//
// Cost: O(requests x providers) memory for a table of the providers' rankings and
// O(total length of the rankings) time. The result is three flat vectors, not one per request.

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace scale::detail {

/// What stable_match returns. Indices are those of its input.
struct StableMatching {
  /// The mark of a provider that serves no request.
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

  /// request_of[j]: the request provider j serves, or `none`. One entry per provider.
  std::vector<std::size_t> request_of;
  /// The providers request i got are matched[first[i]] .. matched[first[i + 1] - 1], best first
  /// by request i's ranking. `first` has one entry per request, plus one.
  std::vector<std::size_t> first;
  std::vector<std::size_t> matched;

  /// The providers request `request` got, best first. Throws std::out_of_range past the last request.
  std::span<const std::size_t> providers_of(std::size_t request) const;
  /// How many requests there are.
  std::size_t requests() const noexcept { return first.empty() ? 0 : first.size() - 1; }
};

/// Many-to-one stable matching, requests proposing.
///
/// - `requests[i]`: the providers request i accepts, best first (indices into `providers`); a
///   provider it does not list is unacceptable to it.
/// - `providers[j]`: the requests provider j accepts, best first (indices into `requests`).
/// - `capacities[i]`: how many providers request i can take (0 takes none).
///
/// Each provider serves at most one request, each request at most its capacity, and only pairs
/// that list each other are matched. The result is stable (no request i and provider j, listed
/// by each other and not matched together, such that i has room or ranks j above one of its
/// providers, and j is free or ranks i above its request) and, of all stable matchings, the
/// best for every request. Throws std::invalid_argument, naming the entry, when `capacities`
/// is not one per request, or a ranking lists an index out of range or the same index twice.
StableMatching stable_match(const std::vector<std::vector<std::size_t>>& requests,
                            const std::vector<std::vector<std::size_t>>& providers,
                            const std::vector<std::size_t>& capacities);

/// A manager with queued work, as the matcher sees it.
struct MatchRequest {
  std::string id;           ///< the manager's id: the last tie-break
  std::string host;         ///< the host it runs on; "" when unknown (then it shares no host)
  std::string site;         ///< its site (ClusterOptions::site); "" when none (shares no site)
  double share_served = 0;  ///< the fraction of worker time it has had lately; finite, >= 0
  std::size_t wanted = 0;   ///< how many idle workers it can use this scan: its capacity
};

/// An idle worker, as the matcher sees it.
struct MatchProvider {
  std::string id;                       ///< the worker's id: a tie-break
  std::string host;                     ///< "" when unknown
  std::string site;                     ///< --scale-site; "" when none
  std::vector<std::size_t> compatible;  ///< the managers (indices) whose queued work it can run
};

/// The input of stable_match, built by path_rankings.
struct MatchRankings {
  std::vector<std::vector<std::size_t>> requests;   ///< per manager: workers, best first
  std::vector<std::vector<std::size_t>> providers;  ///< per worker: managers, best first
  std::vector<std::size_t> capacities;              ///< per manager: its `wanted`
};

/// Both sides' rankings from what the cluster knows. A pair is acceptable to both sides exactly
/// when the worker lists the manager in `compatible`. Each side ranks its acceptable partners by
/// path: same host first, then same site, then the rest (an empty host or site matches nothing).
/// Ties: a worker prefers the manager with the lower share_served, then the lower id, then the
/// lower index; a manager prefers the worker with the lower id, then the lower index. Throws
/// std::invalid_argument, naming the entry, for a compatible index out of range or listed twice,
/// or a share_served that is negative or not finite.
MatchRankings path_rankings(const std::vector<MatchRequest>& managers, const std::vector<MatchProvider>& workers);

/// stable_match over path_rankings' output.
StableMatching stable_match(const MatchRankings& rankings);

}  // namespace scale::detail
