#pragma once
// The items of a keyed call (Iterator::keyed_by) grouped by key: what the dispatch cuts chunks in.
//
// Items with the same key must reach the same worker, and a chunk goes to one worker, so a chunk
// never spans two keys. The algorithms run over the items reordered so that each key's items are
// contiguous (groups in order of each key's first item, items in input order within a group):
// the Job and the manager keep working on ranges [begin, end), with no index list per chunk, and
// the results are put back in input order at the end (map, filter) by `order`.

#include <cstddef>
#include <string>
#include <vector>

namespace scale::detail {

struct KeyGroups {
  /// order[i]: the input index of the i-th item in grouped order.
  std::vector<std::size_t> order;
  /// Group g holds grouped items [begins[g], begins[g + 1]); one entry per group, plus one (the size).
  std::vector<std::size_t> begins;
  /// keys[g]: the key of group g.
  std::vector<std::string> keys;

  std::size_t groups() const noexcept { return keys.size(); }
  /// The group that grouped item `index` belongs to (a binary search).
  std::size_t group_of(std::size_t index) const noexcept;
};

/// Groups items by their keys (`keys[i]` is item i's): stable, groups in order of first
/// appearance. One hash lookup per item.
KeyGroups group_by_key(std::vector<std::string> keys);

}  // namespace scale::detail
