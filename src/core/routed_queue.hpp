#pragma once
// RoutedQueue: a manager's queue of chunks waiting to start, split by requirement class, so that a
// chunk that needs what is held waits without holding up the chunks queued behind it (no
// head-of-line blocking).
//
// Why it looks like this:
//   - Chunks that hold nothing (no RoutedQueue resources: no requirement, or labels only, which
//     the manager checked at submit) go on one plain FIFO, as before routing existed: with no
//     class queued, take_next() is a pop from its front, so a call without requirements pays one
//     branch per chunk and nothing per item.
//   - Chunks that hold amounts go on one FIFO per distinct set of amounts (its class). Classes are
//     few (one per distinct RunOptions::resources among the running calls) and a class goes away
//     when it empties, so take_next() skip-scans a short list: it looks at each class's front only
//     (a later chunk of a class needs what its front needs) and takes the oldest chunk that may
//     start, free or classed. Oldest by a sequence number given at push, so the queue stays first
//     come, first served among what can start.
//   - It only orders: whether a class's front may start (the ledger, a stopped call) is the
//     caller's predicate, and the caller takes the amounts (src/core/resource_ledger.hpp) under
//     the same lock that guards the queue.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "core/resource_ledger.hpp"

namespace scale::detail {

template <class T>
class RoutedQueue {
 public:
  /// Queues `item` behind the others of its class (`resources` empty: the free queue).
  void push_back(T item, const Resources& resources) {
    queue_of(resources).push_back(Node{m_next_back++, std::move(item)});
    ++m_size;
  }
  /// Queues `item` before every other (a chunk given back: a worker lost before it started it).
  void push_front(T item, const Resources& resources) {
    queue_of(resources).push_front(Node{m_next_front--, std::move(item)});
    ++m_size;
  }

  bool empty() const noexcept { return m_size == 0; }
  std::size_t size() const noexcept { return m_size; }
  /// Whether any chunk that holds amounts is queued.
  bool has_classes() const noexcept { return !m_classes.empty(); }

  /// The oldest chunk that may start now: the free queue's front, or a class's front for which
  /// `may_start(resources, item)` holds; none when neither. With no class queued, the free front
  /// (the fast path).
  template <class MayStart>
  std::optional<T> take_next(MayStart&& may_start) {
    if (m_classes.empty()) return pop(m_free);
    std::deque<Node>* best = m_free.empty() ? nullptr : &m_free;
    std::size_t best_class = m_classes.size();
    for (std::size_t i = 0; i < m_classes.size(); ++i) {
      Class& c = m_classes[i];
      if (best != nullptr && c.nodes.front().seq > best->front().seq) continue;
      if (!may_start(c.resources, std::as_const(c.nodes.front().item))) continue;
      best = &c.nodes;
      best_class = i;
    }
    if (best == nullptr) return std::nullopt;
    std::optional<T> item = pop(*best);
    if (best_class < m_classes.size()) drop_if_empty(best_class);
    return item;
  }

  /// The first chunk, free ones first, then each class in turn, for which `wanted(resources,
  /// item)` holds (`resources` empty for a free one); none when no chunk does. A linear scan, for
  /// the rare searches (a waiting pool thread looking for chunks nested in its own).
  template <class Wanted>
  std::optional<T> take_first(Wanted&& wanted) {
    static const Resources none;
    for (auto at = m_free.begin(); at != m_free.end(); ++at)
      if (wanted(none, std::as_const(at->item))) return erase(m_free, at);
    for (std::size_t i = 0; i < m_classes.size(); ++i) {
      Class& c = m_classes[i];
      for (auto at = c.nodes.begin(); at != c.nodes.end(); ++at)
        if (wanted(std::as_const(c.resources), std::as_const(at->item))) {
          std::optional<T> item = erase(c.nodes, at);
          drop_if_empty(i);
          return item;
        }
    }
    return std::nullopt;
  }

  /// Takes out every chunk for which `pred(item)` holds (every one with no predicate), oldest first
  /// within each queue.
  template <class Pred>
  std::vector<T> take_all_if(Pred&& pred) {
    std::vector<T> taken;
    auto sift = [&](std::deque<Node>& nodes) {
      std::deque<Node> kept;
      for (Node& node : nodes) {
        if (pred(std::as_const(node.item)))
          taken.push_back(std::move(node.item));
        else
          kept.push_back(std::move(node));
      }
      nodes.swap(kept);
    };
    sift(m_free);
    for (Class& c : m_classes) sift(c.nodes);
    std::erase_if(m_classes, [](const Class& c) { return c.nodes.empty(); });
    m_size -= taken.size();
    return taken;
  }
  std::vector<T> take_all() {
    return take_all_if([](const T&) { return true; });
  }

  /// Chunks that could start now: every free one, and of each class as many as `room(resources,
  /// queued)` says fit (at most `queued`). What a pool sizes itself on.
  template <class Room>
  std::size_t startable(Room&& room) const {
    std::size_t count = m_free.size();
    for (const Class& c : m_classes) count += room(c.resources, c.nodes.size());
    return count;
  }

 private:
  struct Node {
    std::uint64_t seq;
    T item;
  };
  struct Class {
    explicit Class(Resources of) : resources(std::move(of)) {}
    // Move only: a deque of move-only nodes still claims to be copyable, and the vector would copy.
    Class(Class&&) = default;
    Class& operator=(Class&&) = default;
    Class(const Class&) = delete;
    Class& operator=(const Class&) = delete;

    Resources resources;
    std::deque<Node> nodes;  // never empty while the class is listed
  };

  std::deque<Node>& queue_of(const Resources& resources) {
    if (resources.empty()) return m_free;
    for (Class& c : m_classes)
      if (c.resources == resources) return c.nodes;
    m_classes.emplace_back(resources);
    return m_classes.back().nodes;
  }

  std::optional<T> pop(std::deque<Node>& nodes) {
    if (nodes.empty()) return std::nullopt;
    std::optional<T> item(std::move(nodes.front().item));
    nodes.pop_front();
    --m_size;
    return item;
  }

  std::optional<T> erase(std::deque<Node>& nodes, typename std::deque<Node>::iterator at) {
    std::optional<T> item(std::move(at->item));
    nodes.erase(at);
    --m_size;
    return item;
  }

  void drop_if_empty(std::size_t index) {
    if (m_classes[index].nodes.empty()) m_classes.erase(m_classes.begin() + static_cast<std::ptrdiff_t>(index));
  }

  std::deque<Node> m_free;
  std::vector<Class> m_classes;
  std::size_t m_size = 0;
  // Pushes at the back count up from the middle of the range, pushes at the front down from it.
  std::uint64_t m_next_back = std::uint64_t{1} << 63;
  std::uint64_t m_next_front = (std::uint64_t{1} << 63) - 1;
};

}  // namespace scale::detail
