// SharedEventEmitter("http://..."): an emit is a POST to scale-store, a subscription an SSE stream
// of GET /v1/events/{name}. Delivery is at most once across a dropped connection: the stream is
// opened again (with backoff), and emits made while it was down are not replayed.

#include "core/percent_encoding.hpp"
#include "core/promise_callback.hpp"
#include "http/http_client.hpp"
#include <scale/error.hpp>


namespace scale::detail {
namespace {

using json = nlohmann::json;

class HttpEvents final : public EventBackend {
 public:
  explicit HttpEvents(HttpUrl url) : m_client(std::make_shared<HttpClient>(std::move(url))) {}

  Future<void> emit(std::string event, json payload) override {
    std::string body;
    try {
      body = payload.dump();
    } catch (...) {
      return make_failed_future<void>(std::current_exception());
    }
    auto client = m_client;
    PromiseCallback<void> bridge;
    m_client->request("POST", "/v1/events/" + percent_encode(event, true), body, {},
                      bridge.callback<HttpResponse>([client](HttpResponse response) {
                        if (response.status != 200) std::rethrow_exception(client->answer_error("emit", response));
                      }));
    return std::move(bridge.future);
  }

  void subscribe(std::string event, std::shared_ptr<SubscriptionQueue<json>> queue) override {
    // NOTE: emits made after this call wait until the server has the subscription (or 2 s), so
    // once() followed by emit() from this emitter sees the emit.
    SseHandlers handlers;
    handlers.target = [target = "/v1/events/" + percent_encode(event, true)] { return target; };
    handlers.on_event = [queue](const SseEvent& sse) {
      if (!sse.event.empty() && sse.event != "message") return true;
      auto payload = json::parse(sse.data, nullptr, false);
      if (payload.is_discarded()) return true;
      queue->push(std::make_shared<const json>(std::move(payload)));
      return true;
    };
    open_subscription_stream(m_client, queue, std::move(handlers));
  }

 private:
  std::shared_ptr<HttpClient> m_client;
};

}  // namespace

std::shared_ptr<EventBackend> make_http_events(const std::string& url) {
  return std::make_shared<HttpEvents>(parse_http_url(url));
}

}  // namespace scale::detail
