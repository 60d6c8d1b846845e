// SharedEventEmitter("redis://..."): events on Redis Pub/Sub, one channel per event name,
// "<tag>:event:<name>". Delivery is at most once: an emit reaches the subscriptions whose
// SUBSCRIBE Redis has confirmed, and none while the subscriber connection is down (it reconnects
// with backoff and subscribes again). docs/redis.md states the guarantees.

#include <scale/detail/event_backend.hpp>
#include "core/promise_callback.hpp"
#include "redis/redis_client.hpp"

#include <atomic>
#include <deque>
#include <map>

namespace scale::detail {
namespace {

using EventQueue = SubscriptionQueue<nlohmann::json>;

// NOTE: all state lives on the client's I/O thread (every entry point posts there), so it needs
// no lock, and the order of posts keeps the order of emits and subscriptions from each thread.
class RedisEvents final : public EventBackend, public std::enable_shared_from_this<RedisEvents> {
 public:
  RedisEvents(RedisUrl url, std::string tag)
      : m_client(std::make_unique<RedisClient>(std::move(url))), m_prefix(std::move(tag) + ":event:") {
    m_client->set_pubsub_handlers([this](RedisReply reply) { pushed(std::move(reply)); }, [this] { connected(); },
                                  [this] { disconnected(); });
  }

  ~RedisEvents() override { m_client->stop(); }  // no callback runs on a half-destroyed backend

  Future<void> emit(std::string event, nlohmann::json payload) override {
    std::string text;
    try {
      text = payload.dump();
    } catch (...) {
      return make_failed_future<void>(std::current_exception());
    }
    PromiseCallback<void> bridge;
    auto done = bridge.callback<RedisReply>([this](RedisReply reply) {
      if (reply.is_error()) std::rethrow_exception(m_client->error_of("PUBLISH", reply));
    });
    m_client->post([this, channel = m_prefix + event, text = std::move(text), done = std::move(done)]() mutable {
      auto publish = [this, channel = std::move(channel), text = std::move(text), done = std::move(done)] {
        m_client->send(RedisClient::Role::commands, {"PUBLISH", channel, text}, done);
      };
      // NOTE: an emit waits for the SUBSCRIBEs requested before it, so a subscriber in this process
      // that subscribed first (once() followed by emit()) sees it.
      if (m_unconfirmed > 0 || !m_held.empty()) {
        if (m_held.empty()) hold_timeout();
        m_held.push_back(std::move(publish));
      } else {
        publish();
      }
    });
    return std::move(bridge.future);
  }

  void subscribe(std::string event, std::shared_ptr<EventQueue> queue) override {
    auto id = m_next_id.fetch_add(1) + 1;
    queue->set_canceller([weak = weak_from_this(), channel = m_prefix + event, id] {
      // NOTE: the posted call holds no reference: it runs only while the client (owned by the
      // backend) is alive, and the backend must never be destroyed on the I/O thread.
      if (auto self = weak.lock()) self->m_client->post([raw = self.get(), channel, id] { raw->remove(channel, id); });
    });
    m_client->post([this, channel = m_prefix + event, id, queue = std::move(queue)]() mutable {
      if (!m_started) {
        m_started = true;
        m_client->start_pubsub();
      }
      auto& state = m_channels[channel];
      state.queues.emplace_back(id, queue);
      if (state.pending == 0 && state.confirmed) {
        queue->set_ready();
      } else if (state.pending == 0) {
        ++state.pending;
        ++m_unconfirmed;
        if (m_connected) m_client->send(RedisClient::Role::pubsub, {"SUBSCRIBE", channel}, nullptr);
      }
    });
  }

 private:
  struct Channel {
    std::vector<std::pair<std::uint64_t, std::shared_ptr<EventQueue>>> queues;
    int pending = 0;         // SUBSCRIBEs not yet confirmed
    bool confirmed = false;  // Redis has the subscription
  };

  void connected() {
    m_connected = true;
    m_unconfirmed = 0;
    for (auto it = m_channels.begin(); it != m_channels.end();) {
      if (it->second.queues.empty()) {
        it = m_channels.erase(it);
        continue;
      }
      it->second.pending = 1;
      ++m_unconfirmed;
      m_client->send(RedisClient::Role::pubsub, {"SUBSCRIBE", it->first}, nullptr);
      ++it;
    }
    release_if_settled();
  }

  void disconnected() {
    m_connected = false;
    m_unconfirmed = 0;
    for (auto& [name, channel] : m_channels) {
      channel.confirmed = false;
      channel.pending = channel.queues.empty() ? 0 : 1;  // subscribed again on reconnect
    }
    release_held();  // no emit waits for a reconnection; what is published meanwhile is lost
  }

  void pushed(RedisReply reply) {
    if (reply.type != RedisReply::Type::array || reply.elements.size() < 3) return;
    const auto& kind = reply.elements[0].str;
    const auto& name = reply.elements[1].str;
    if (kind == "message") {
      auto found = m_channels.find(name);
      if (found == m_channels.end()) return;
      std::shared_ptr<const nlohmann::json> payload;
      try {
        payload = std::make_shared<const nlohmann::json>(nlohmann::json::parse(reply.elements[2].str));
      } catch (const std::exception& error) {
        log_error("a Redis event on " + name + " is not JSON (dropped): " + error.what());
        return;
      }
      for (auto& [id, queue] : found->second.queues) queue->push(payload);
    } else if (kind == "subscribe") {
      if (m_unconfirmed > 0) --m_unconfirmed;
      auto found = m_channels.find(name);
      if (found != m_channels.end() && found->second.pending > 0 && --found->second.pending == 0) {
        found->second.confirmed = true;
        if (found->second.queues.empty()) {
          unsubscribe(found);
        } else {
          for (auto& [id, queue] : found->second.queues) queue->set_ready();
        }
      }
      release_if_settled();
    }
  }

  void remove(const std::string& name, std::uint64_t id) {
    auto found = m_channels.find(name);
    if (found == m_channels.end()) return;
    std::erase_if(found->second.queues, [id](const auto& entry) { return entry.first == id; });
    if (found->second.queues.empty() && found->second.pending == 0) unsubscribe(found);
  }

  void unsubscribe(std::map<std::string, Channel>::iterator channel) {
    if (m_connected) m_client->send(RedisClient::Role::pubsub, {"UNSUBSCRIBE", channel->first}, nullptr);
    m_channels.erase(channel);
  }

  void release_if_settled() {
    if (m_unconfirmed == 0) release_held();
  }

  void release_held() {
    auto held = std::move(m_held);
    m_held.clear();
    ++m_hold_generation;
    for (auto& publish : held) publish();
  }

  /// Emits wait at most this long for subscriptions (Redis may be unreachable).
  void hold_timeout() {
    m_client->post(
        [this, generation = m_hold_generation] {
          if (generation == m_hold_generation) release_held();
        },
        5000);
  }

  std::unique_ptr<RedisClient> m_client;
  const std::string m_prefix;
  std::atomic<std::uint64_t> m_next_id{0};
  // I/O thread only:
  std::map<std::string, Channel> m_channels;
  int m_unconfirmed = 0;
  std::deque<std::function<void()>> m_held;
  std::uint64_t m_hold_generation = 0;
  bool m_connected = false;
  bool m_started = false;
};

}  // namespace

std::shared_ptr<EventBackend> make_redis_events(const std::string& text) {
  auto url = parse_redis_url(text);
  std::string tag = "{scale}";
  for (const auto& [name, value] : url.query) {
    if (name == "namespace") {
      tag = "{scale:" + value + "}";
    } else if (name != "history") {  // history is a SharedMemory option; the same URL may serve both
      throw Error("scale::SharedEventEmitter(\"" + text + "\"): unknown option '" + name +
                  "'; the option is namespace");
    }
  }
  return std::make_shared<RedisEvents>(std::move(url), std::move(tag));
}

}  // namespace scale::detail
