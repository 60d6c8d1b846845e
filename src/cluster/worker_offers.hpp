#pragma once
// WorkerOffers: what the live and recently seen workers of a ClusterManager's build provide, so the
// manager can tell a call whose requirement none of them can ever meet (scale::Unsatisfiable, at
// once) from one that must wait for a busy worker, and both from a cluster with no worker at all
// (NoWorkers, after ClusterOptions::wait_for_workers).
//
// Why it looks like this:
//   - "Recently seen" lasts wait_for_workers: a gpu worker that crashed and is being restarted
//     keeps its calls waiting as long as a cluster with no worker would, not failed at once.
//   - One offer per worker id: a worker ordered to provide something else replaces its offer, so a
//     call that was unsatisfiable is met from the order on (and one that no longer is, fails).
//   - version() changes whenever what is offered changes, so the manager checks a class against
//     the offers once per change, not once per chunk.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <scale/detail/requirement.hpp>
#include <scale/provides.hpp>

namespace scale::detail {

class WorkerOffers {
 public:
  using Clock = std::chrono::steady_clock;

  /// `recent`: how long a worker's offer counts after it was last seen live.
  explicit WorkerOffers(std::chrono::milliseconds recent) : m_recent(recent) {}

  /// The live compatible worker `id` provides `provides` (a heartbeat or an announcement said so).
  void seen(const std::string& id, const Provides& provides, Clock::time_point now);
  /// Drops the offers of workers not seen within `recent`.
  void expire(Clock::time_point now);

  /// No worker was seen recently: a requirement waits (for NoWorkers) rather than fails.
  bool empty() const noexcept { return m_offers.empty(); }
  /// Whether some worker seen recently could ever run a chunk that needs `requirement`.
  bool can_meet(const Requirement& requirement) const;
  /// (worker id, provides) of each, for detail::unsatisfiable_message.
  std::vector<std::pair<std::string, Provides>> offers() const;
  /// Changes whenever an offer comes, changes or goes.
  std::uint64_t version() const noexcept { return m_version; }

 private:
  struct Offer {
    Provides provides;
    Clock::time_point seen;
  };
  std::chrono::milliseconds m_recent;
  std::map<std::string, Offer> m_offers;
  std::uint64_t m_version = 1;
};

}  // namespace scale::detail
