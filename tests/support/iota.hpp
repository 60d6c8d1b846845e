#pragma once
// The items most tests map over.

#include <cstddef>
#include <numeric>
#include <vector>

namespace support {

/// The items 0, 1, ..., n - 1.
inline std::vector<int> iota(int n) {
  std::vector<int> items(static_cast<std::size_t>(n));
  std::iota(items.begin(), items.end(), 0);
  return items;
}

}  // namespace support
