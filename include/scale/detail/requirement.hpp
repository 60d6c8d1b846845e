#pragma once
// Requirement: what one call's chunks hold while they run (RunOptions::resources) and must match
// (RunOptions::labels), and whether a worker's Provides can ever meet it. One class per distinct
// requirement: the managers keep one queue (the cluster one stream) per class, so chunks of one
// requirement never wait behind another's.

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <scale/provides.hpp>

namespace scale::detail {

struct Requirement {
  std::map<std::string, double> resources{};
  std::map<std::string, std::string> labels{};

  bool empty() const noexcept { return resources.empty() && labels.empty(); }
  /// The class's canonical name: "gpu=1,site=eu-1" (resources then labels, each sorted; "" for
  /// none), the same for equal requirements, for queue and stream names and messages.
  std::string text() const;
  /// std::invalid_argument for an empty name or a non-positive or non-finite amount, saying what
  /// to pass instead (RunOptions::resources holds amounts > 0).
  void validate() const;
  /// Whether a worker offering `provides` could ever run it: every label equal, every amount at
  /// most what it offers (a label where an amount is asked, or the reverse, is a mismatch).
  bool met_by(const Provides& provides) const;

  friend bool operator==(const Requirement&, const Requirement&) = default;
};

/// The scale::Unsatisfiable message: what was asked and what each worker (id, provides) offers,
/// "no worker has been seen" when `offers` is empty.
std::string unsatisfiable_message(const Requirement& asked,
                                  const std::vector<std::pair<std::string, Provides>>& offers);

}  // namespace scale::detail
