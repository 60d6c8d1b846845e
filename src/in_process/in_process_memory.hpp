#pragma once
// What the store server asks of its in-process backend beyond MemoryBackend: a listing and a
// history in pages, counters that read no entry, and a conditional erase
// (src/in_process/in_process_memory.cpp).

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <scale/detail/memory_backend.hpp>

namespace scale::detail {

/// One page of a listing: entries in key order, and whether more follow the last of them.
struct ListPage {
  std::vector<Entry> entries;
  bool more = false;
};

/// One page of the kept history: changes in revision order, shared with the history (no value is
/// copied), and where the next page starts.
struct HistoryPage {
  std::vector<std::shared_ptr<const Change>> changes;
  Revision next = 0;  // the first revision this page did not look at
  bool more = false;  // the history held changes from `next` on when the page was read
};

/// What the store holds, read without copying it.
struct MemoryCounts {
  std::size_t keys = 0;
  Revision revision = 0;
};

/// The in-process backend as the store server uses it (make_in_process_memory makes one).
class PagedMemory : public MemoryBackend {
 public:
  /// The entries whose key starts with `prefix` and sorts after `after` (all from the first when
  /// empty), in key order: at most `limit`, and no more once their keys and values hold about
  /// `max_bytes` (always at least one when there is one).
  virtual ListPage list_page(const std::string& prefix, const std::string& after, std::size_t limit,
                             std::size_t max_bytes) = 0;
  /// The kept changes to keys starting with `prefix` whose revision is >= `from` (not 0), in
  /// revision order: about `max_bytes` of keys and values (at least one change when there is
  /// one), ending with a whole revision. Throws scale::Compacted when changes from `from` on are
  /// no longer all kept. A watch that replays the history page by page (the store server's, as
  /// fast as its client reads) then watches from the last page's `next`.
  virtual HistoryPage history_page(const std::string& prefix, Revision from, std::size_t max_bytes) = 0;
  /// Removes the key when its revision is `expected` (the HTTP API's DELETE with If-Match): the
  /// revision of the erase, or 0 when the key is absent or at another revision (nothing written).
  virtual Future<Revision> erase_revision(std::string key, Revision expected) = 0;
  /// The number of keys and the latest revision.
  virtual MemoryCounts counts() = 0;
};

}  // namespace scale::detail
