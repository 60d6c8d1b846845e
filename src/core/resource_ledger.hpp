#pragma once
// ResourceLedger: what one worker provides and what its running chunks hold of it. A manager on
// one machine (inline, thread pool, process pool) is one such worker, whatever its thread or
// child count: a machine's two GPUs are gpu=2 for the pool, not per thread. A cluster worker keeps
// one too.
//
// Why it looks like this:
//   - It only counts; it neither queues nor locks. Each manager keeps its waiting chunks in its own
//     queue (src/core/routed_queue.hpp) and guards the ledger with the lock that guards that queue,
//     so "does it fit" and "take it" are one step under a lock the manager already holds.
//   - Amounts are doubles (RunOptions::resources and Provides are). Sums of fractions drift
//     (0.1 + 0.2 > 0.3), so a fit allows a relative slack of one part in 10^9, and a name's held
//     amount goes back to exactly 0 when its last holder releases it: drift never accumulates
//     across holders, and an amount that was free once is free again.
//   - What is provided may change while chunks hold part of it (a cluster worker's order): holders
//     keep what they took, and nothing new is taken until the held amount is below the new offer.

#include <cstddef>
#include <map>
#include <string>

#include <scale/detail/requirement.hpp>
#include <scale/provides.hpp>

namespace scale::detail {

/// The amounts one chunk holds while it runs (RunOptions::resources).
using Resources = std::map<std::string, double>;

class ResourceLedger {
 public:
  /// Throws std::invalid_argument, naming `owner` (e.g. "ThreadPoolOptions::provides") and the
  /// entry, for an entry parse_provides would refuse (an empty name, a negative or non-finite
  /// amount) or one its text form cannot carry.
  explicit ResourceLedger(Provides provides = {}, const std::string& owner = "provides");

  const Provides& provides() const noexcept { return m_provides; }
  /// Replaces what is offered (validated as the constructor does); holders keep what they hold.
  void set_provides(Provides provides, const std::string& owner = "provides");

  /// Whether a chunk of `requirement` could ever run here (Requirement::met_by).
  bool can_meet(const Requirement& requirement) const { return requirement.met_by(m_provides); }

  /// Whether `resources` fit in what is free now (true for none).
  bool fits(const Resources& resources) const noexcept;
  /// Takes `resources` when they fit; returns whether it did.
  bool take(const Resources& resources);
  /// Gives back what one take(resources) took.
  void release(const Resources& resources) noexcept;
  /// How many more chunks holding `resources` would fit now, at most `limit`.
  std::size_t room_for(const Resources& resources, std::size_t limit) const noexcept;

  /// The amount of `name` held now, and by how many chunks.
  double held(const std::string& name) const noexcept;
  std::size_t holders(const std::string& name) const noexcept;

 private:
  struct Amount {
    double offered = 0;
    double held = 0;
    std::size_t holders = 0;
  };
  static bool fits_in(const Amount& amount, double asked) noexcept;

  Provides m_provides;
  std::map<std::string, Amount> m_amounts;  // every amount offered, or still held since it was
};

}  // namespace scale::detail
