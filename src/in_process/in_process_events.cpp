// The in-process SharedEventEmitter bus: subscribers by exact event name, and the store's
// subscribers by name prefix (src/in_process/in_process_events.hpp).

#include "in_process/in_process_events.hpp"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace scale::detail {
namespace {

using EventQueue = SubscriptionQueue<nlohmann::json>;
using NamedQueue = SubscriptionQueue<NamedEvent>;

// NOTE: emits are serialized by m_mutex while the payload is appended to each subscriber's queue,
// so every subscriber sees this bus's events in one order; drains are posted after the unlock, so
// no handler runs under the mutex.
class InProcessBus final : public InProcessEvents, public std::enable_shared_from_this<InProcessBus> {
 public:
  Future<void> emit(std::string event, nlohmann::json payload) override {
    std::vector<std::shared_ptr<EventQueue>> to_schedule;
    std::vector<std::shared_ptr<NamedQueue>> prefixed_to_schedule;
    {
      std::lock_guard lock(m_mutex);
      auto found = m_subscribers.find(event);
      if (found == m_subscribers.end() && m_prefixed.empty()) return make_ready_future();
      auto shared = std::make_shared<const nlohmann::json>(std::move(payload));
      if (found != m_subscribers.end())
        for (auto& subscriber : found->second)
          if (subscriber.queue->enqueue(shared)) to_schedule.push_back(subscriber.queue);
      std::shared_ptr<const NamedEvent> named;  // made once, for the first prefix that matches
      for (auto& subscriber : m_prefixed) {
        if (!event.starts_with(subscriber.prefix)) continue;
        if (!named) named = std::make_shared<const NamedEvent>(NamedEvent{event, shared});
        if (subscriber.queue->enqueue(named)) prefixed_to_schedule.push_back(subscriber.queue);
      }
    }
    for (auto& queue : to_schedule) queue->schedule();
    for (auto& queue : prefixed_to_schedule) queue->schedule();
    return make_ready_future();
  }

  void subscribe(std::string event, std::shared_ptr<EventQueue> queue) override {
    std::uint64_t id;
    {
      std::lock_guard lock(m_mutex);
      id = ++m_next_id;
      m_subscribers[event].push_back(Subscriber{id, queue});
    }
    queue->set_canceller([weak = weak_from_this(), event = std::move(event), id] {
      if (auto self = weak.lock()) self->unsubscribe(event, id);
    });
    queue->set_ready();
  }

  void subscribe_prefix(std::string prefix, std::shared_ptr<NamedQueue> queue) override {
    std::uint64_t id;
    {
      std::lock_guard lock(m_mutex);
      id = ++m_next_id;
      m_prefixed.push_back(PrefixSubscriber{id, std::move(prefix), queue});
    }
    queue->set_canceller([weak = weak_from_this(), id] {
      if (auto self = weak.lock()) self->unsubscribe_prefix(id);
    });
    queue->set_ready();
  }

 private:
  struct Subscriber {
    std::uint64_t id;
    std::shared_ptr<EventQueue> queue;
  };
  struct PrefixSubscriber {
    std::uint64_t id;
    std::string prefix;
    std::shared_ptr<NamedQueue> queue;
  };

  void unsubscribe(const std::string& event, std::uint64_t id) {
    std::shared_ptr<EventQueue> removed;  // released after the lock
    std::lock_guard lock(m_mutex);
    auto found = m_subscribers.find(event);
    if (found == m_subscribers.end()) return;
    auto& list = found->second;
    auto it = std::find_if(list.begin(), list.end(), [&](const Subscriber& s) { return s.id == id; });
    if (it == list.end()) return;
    removed = std::move(it->queue);
    list.erase(it);
    if (list.empty()) m_subscribers.erase(found);
  }

  void unsubscribe_prefix(std::uint64_t id) {
    std::shared_ptr<NamedQueue> removed;  // released after the lock
    std::lock_guard lock(m_mutex);
    auto it = std::find_if(m_prefixed.begin(), m_prefixed.end(), [&](const PrefixSubscriber& s) { return s.id == id; });
    if (it == m_prefixed.end()) return;
    removed = std::move(it->queue);
    m_prefixed.erase(it);
  }

  std::mutex m_mutex;
  std::unordered_map<std::string, std::vector<Subscriber>> m_subscribers;
  std::vector<PrefixSubscriber> m_prefixed;
  std::uint64_t m_next_id = 0;
};

}  // namespace

std::shared_ptr<InProcessEvents> make_in_process_bus() { return std::make_shared<InProcessBus>(); }

std::shared_ptr<EventBackend> make_in_process_events() { return make_in_process_bus(); }

}  // namespace scale::detail
