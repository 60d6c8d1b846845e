// The in-process SharedEventEmitter bus: subscribers by exact event name.

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <scale/detail/event_backend.hpp>

namespace scale::detail {
namespace {

using EventQueue = SubscriptionQueue<nlohmann::json>;

// NOTE: emits are serialized by m_mutex while the payload is appended to each subscriber's queue,
// so every subscriber sees this bus's events in one order; drains are posted after the unlock, so
// no handler runs under the mutex.
class InProcessEvents final : public EventBackend, public std::enable_shared_from_this<InProcessEvents> {
 public:
  Future<void> emit(std::string event, nlohmann::json payload) override {
    std::vector<std::shared_ptr<EventQueue>> to_schedule;
    {
      std::lock_guard lock(m_mutex);
      auto found = m_subscribers.find(event);
      if (found == m_subscribers.end()) return make_ready_future();
      auto shared = std::make_shared<const nlohmann::json>(std::move(payload));
      for (auto& subscriber : found->second)
        if (subscriber.queue->enqueue(shared)) to_schedule.push_back(subscriber.queue);
    }
    for (auto& queue : to_schedule) queue->schedule();
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

 private:
  struct Subscriber {
    std::uint64_t id;
    std::shared_ptr<EventQueue> queue;
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

  std::mutex m_mutex;
  std::unordered_map<std::string, std::vector<Subscriber>> m_subscribers;
  std::uint64_t m_next_id = 0;
};

}  // namespace

std::shared_ptr<EventBackend> make_in_process_events() { return std::make_shared<InProcessEvents>(); }

}  // namespace scale::detail
