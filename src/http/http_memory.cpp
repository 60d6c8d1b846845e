// SharedMemory("http://..."): every call is one request to scale-store (docs/http-api.md); a watch
// is an SSE stream that, after a dropped connection, asks again from the last revision it saw and
// skips the keys of that revision it already delivered, so no change is missed or repeated.

#include "core/entry_json.hpp"
#include "core/percent_encoding.hpp"
#include "core/promise_callback.hpp"
#include "http/http_client.hpp"
#include <scale/error.hpp>
#include <scale/shared_memory.hpp>

#include <mutex>
#include <set>
#include <type_traits>

namespace scale::detail {
namespace {

using json = nlohmann::json;

/// Sends a request and completes the Future with convert(response) on the client's I/O thread.
template <class T, class Convert>
Future<T> call(HttpClient& client, std::string method, std::string target, std::string body,
               std::vector<std::pair<std::string, std::string>> headers, Convert convert) {
  PromiseCallback<T> bridge;
  client.request(std::move(method), std::move(target), std::move(body), std::move(headers),
                 bridge.template callback<HttpResponse>(std::move(convert)));
  return std::move(bridge.future);
}

class HttpMemory final : public MemoryBackend {
 public:
  explicit HttpMemory(HttpUrl url) : m_client(std::make_shared<HttpClient>(std::move(url))) {}

  Future<Revision> set_many(json object) override {
    auto client = m_client;
    return call<Revision>(*m_client, "POST", "/v1/kv", object.dump(), {}, [client](HttpResponse response) {
      if (response.status != 200) std::rethrow_exception(client->answer_error("set", response));
      return json::parse(response.body).at("revision").get<Revision>();
    });
  }

  Future<std::optional<Entry>> entry(std::string key) override {
    auto client = m_client;
    return call<std::optional<Entry>>(*m_client, "GET", kv(key), {}, {},
                                      [client](HttpResponse response) -> std::optional<Entry> {
                                        if (response.status == 404) return std::nullopt;
                                        if (response.status != 200)
                                          std::rethrow_exception(client->answer_error("get", response));
                                        return json::parse(response.body).get<Entry>();
                                      });
  }

  Future<bool> erase(std::string key) override {
    auto client = m_client;
    return call<bool>(*m_client, "DELETE", kv(key), {}, {}, [client](HttpResponse response) {
      if (response.status == 404) return false;
      if (response.status != 200) std::rethrow_exception(client->answer_error("erase", response));
      return true;
    });
  }

  Future<Revision> compare_and_set_revision(std::string key, Revision expected, json value) override {
    return cas(std::move(key), expected, std::move(value), [](Revision r) { return r; });
  }

  template <class F>
  Future<std::invoke_result_t<F, Revision>> cas(std::string key, Revision expected, json value, F result) {
    using T = decltype(result(Revision{}));
    std::vector<std::pair<std::string, std::string>> headers;
    if (expected == 0)
      headers.emplace_back("If-None-Match", "*");
    else
      headers.emplace_back("If-Match", std::to_string(expected));
    auto client = m_client;
    return call<T>(*m_client, "PUT", kv(key), value.dump(), std::move(headers),
                   [client, result](HttpResponse response) {
                     if (response.status == 412) return result(0);
                     if (response.status != 200)
                       std::rethrow_exception(client->answer_error("compare_and_set", response));
                     return result(json::parse(response.body).at("revision").get<Revision>());
                   });
  }

  Future<Incremented> increment_with_revision(std::string key, std::int64_t by) override {
    return add(std::move(key), by, [](Incremented i) { return i; });
  }

  template <class F>
  Future<std::invoke_result_t<F, Incremented>> add(std::string key, std::int64_t by, F result) {
    using T = decltype(result(Incremented{}));
    auto client = m_client;
    // A TypeMismatch (or an overflow) comes back typed in the answer itself (answer_error).
    return call<T>(
        *m_client, "POST", "/v1/increment/" + percent_encode(key, true), json{{"by", by}}.dump(), {},
        [client, result](HttpResponse response) {
          if (response.status != 200) std::rethrow_exception(client->answer_error("increment", response));
          auto body = json::parse(response.body);
          return result(Incremented{body.at("value").get<std::int64_t>(), body.at("revision").get<Revision>()});
        });
  }

  Future<std::vector<Entry>> list(std::string prefix) override {
    // The server answers a listing in pages (docs/http-api.md): follow them to the last.
    auto client = m_client;
    std::vector<Entry> entries;
    std::string after;
    for (;;) {
      std::string target = "/v1/kv?prefix=" + percent_encode(prefix, false) + "&limit=10000";
      if (!after.empty()) target += "&after=" + percent_encode(after, false);
      Future<json> answered = call<json>(*client, "GET", std::move(target), {}, {}, [client](HttpResponse response) {
        if (response.status != 200) std::rethrow_exception(client->answer_error("list", response));
        return json::parse(response.body);
      });
      json page = co_await detail::resume_where_completed(std::move(answered));
      for (const auto& item : page.at("entries")) entries.push_back(item.get<Entry>());
      const json& next = page.at("next");
      if (next.is_null()) co_return entries;
      after = next.get<std::string>();
    }
  }

  void watch(std::string prefix, Revision from_revision, std::shared_ptr<SubscriptionQueue<Change>> queue) override {
    // NOTE: the stream's callbacks run on the client's I/O thread only, except `base`, which a
    // request's answer sets; `mutex` guards the cursor.
    struct Cursor {
      std::mutex mutex;
      Revision from = 0;                   // what the first connection asks for (0: from now on)
      Revision base = 0;                   // for a from-now-on watch: the first revision after it was in place
      Revision last = 0;                   // the last revision delivered
      std::set<std::string> keys_at_last;  // keys of `last` already delivered
      bool ready = false;
    };
    auto cursor = std::make_shared<Cursor>();
    cursor->from = from_revision;
    std::weak_ptr<HttpClient> weak = m_client;
    SseHandlers handlers;
    handlers.target = [prefix, cursor] {
      std::lock_guard lock(cursor->mutex);
      Revision from = cursor->last > 0 ? cursor->last : (cursor->base > 0 ? cursor->base : cursor->from);
      std::string target = "/v1/watch?prefix=" + percent_encode(prefix, false);
      if (from > 0) target += "&from=" + std::to_string(from);
      return target;
    };
    handlers.on_ready = [cursor, weak] {
      bool first;
      {
        std::lock_guard lock(cursor->mutex);
        first = !cursor->ready;
        cursor->ready = true;
      }
      if (!first) return;
      if (cursor->from == 0) {
        // Learn the revision the watch started at, so a reconnection before any change still
        // resumes there (an empty POST /v1/kv answers the current revision).
        if (auto c = weak.lock()) {
          c->request("POST", "/v1/kv", "{}", {}, [cursor](std::exception_ptr error, HttpResponse response) {
            if (error || response.status != 200) return;
            auto revision = json::parse(response.body).at("revision").get<Revision>();
            std::lock_guard lock(cursor->mutex);
            if (cursor->base == 0) cursor->base = revision + 1;
          });
        }
      }
    };
    handlers.on_event = [queue, cursor](const SseEvent& event) {
      if (event.event == "compacted" || event.event == "error") {
        // The event carries the error's wire form: a Compacted (or whatever ended the watch) of its own type.
        std::exception_ptr error = typed_answer_error(event.data);
        if (!error) error = std::make_exception_ptr(Error("scale: watch failed on the store server: " + event.data));
        queue->set_error(error);
        return false;
      }
      auto body = json::parse(event.data, nullptr, false);
      if (!body.is_object()) return true;
      auto change = body.get<Change>();
      {
        std::lock_guard lock(cursor->mutex);
        if (change.revision < cursor->last) return true;
        if (change.revision == cursor->last) {
          if (!cursor->keys_at_last.insert(change.key).second) return true;  // seen before a reconnection
        } else {
          cursor->last = change.revision;
          cursor->keys_at_last = {change.key};
        }
      }
      queue->push(std::make_shared<const Change>(std::move(change)));
      return true;
    };
    open_subscription_stream(m_client, queue, std::move(handlers));
  }

 private:
  static std::string kv(const std::string& key) { return "/v1/kv/" + percent_encode(key, true); }

  std::shared_ptr<HttpClient> m_client;
};

}  // namespace

std::shared_ptr<MemoryBackend> make_http_memory(const std::string& url) {
  return std::make_shared<HttpMemory>(parse_http_url(url));
}

}  // namespace scale::detail
