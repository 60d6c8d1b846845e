// Grouping a keyed call's items by key (scale/detail/key_groups.hpp).

#include <scale/detail/key_groups.hpp>

#include <algorithm>
#include <string_view>
#include <unordered_map>

namespace scale::detail {

std::size_t KeyGroups::group_of(std::size_t index) const noexcept {
  const auto after = std::upper_bound(begins.begin(), begins.end(), index);
  return static_cast<std::size_t>(after - begins.begin()) - 1;
}

KeyGroups group_by_key(std::vector<std::string> keys) {
  const std::size_t size = keys.size();
  std::vector<std::size_t> group(size);
  std::vector<std::size_t> counts;
  KeyGroups groups;
  {
    // Views into `keys`, which stays untouched until the groups' keys are moved out below.
    std::unordered_map<std::string_view, std::size_t> index;
    index.reserve(size);
    for (std::size_t i = 0; i < size; ++i) {
      auto [at, added] = index.try_emplace(keys[i], counts.size());
      if (added) counts.push_back(0);
      group[i] = at->second;
      ++counts[at->second];
    }
  }
  groups.begins.resize(counts.size() + 1);
  for (std::size_t g = 0; g < counts.size(); ++g) groups.begins[g + 1] = groups.begins[g] + counts[g];
  groups.keys.resize(counts.size());
  std::vector<std::size_t> next(groups.begins.begin(), groups.begins.end() - 1);
  groups.order.resize(size);
  for (std::size_t i = 0; i < size; ++i) {
    const std::size_t g = group[i];
    if (next[g] == groups.begins[g]) groups.keys[g] = keys[i];  // the group's first item
    groups.order[next[g]++] = i;
  }
  return groups;
}

}  // namespace scale::detail
