#pragma once
// The ids of a local manager's workers by slot ("thread-<k>", "child-<k>": WorkerResult::worker),
// and back: a pinned chunk (Chunk::worker) names its slot this way.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace scale::detail {

/// `prefix` followed by the slot's number: slot_id("thread-", 2) is "thread-2".
inline std::string slot_id(std::string_view prefix, std::size_t slot) {
  return std::string(prefix) + std::to_string(slot);
}

/// The slot an id of that form names, or none (another prefix, no digits, not a number).
inline std::optional<std::size_t> slot_of(std::string_view prefix, std::string_view worker) {
  if (worker.size() <= prefix.size() || worker.substr(0, prefix.size()) != prefix) return std::nullopt;
  std::size_t slot = 0;
  for (const char digit : worker.substr(prefix.size())) {
    if (digit < '0' || digit > '9' || slot > 1'000'000) return std::nullopt;
    slot = slot * 10 + static_cast<std::size_t>(digit - '0');
  }
  return slot;
}

}  // namespace scale::detail
