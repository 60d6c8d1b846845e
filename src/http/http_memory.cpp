// SharedMemory("http://..."): every call is one request to scale-store (docs/http-api.md); a watch
// is an SSE stream that, after a dropped connection, asks again from the last revision it saw and
// skips the keys of that revision it already delivered, so no change is missed or repeated.

#include "http/http_client.hpp"
#include <scale/error.hpp>
#include <scale/shared_memory.hpp>

#include <mutex>
#include <set>
#include <type_traits>

namespace scale::detail {
namespace {

using json = nlohmann::json;

Entry entry_of(const json& body) {
  return Entry{body.at("key").get<std::string>(), body.at("value"), body.at("revision").get<Revision>(),
               body.at("timestamp_ms").get<std::int64_t>()};
}

/// Sends a request and completes the Future with convert(response) on the client's I/O thread.
template <class T, class Convert>
Future<T> call(HttpClient& client, std::string method, std::string target, std::string body,
               std::vector<std::pair<std::string, std::string>> headers, Convert convert) {
  auto promise = std::make_shared<Promise<T>>();
  auto future = promise->get_future();
  client.request(std::move(method), std::move(target), std::move(body), std::move(headers),
                 [promise, convert = std::move(convert)](std::exception_ptr error, HttpResponse response) mutable {
                   if (error) {
            promise->set_exception(error);
            return;
          }
                   try {
                     promise->set_value(convert(std::move(response)));
                   } catch (...) {
                     promise->set_exception(std::current_exception());
                   }
                 });
  return future;
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
    return call<std::optional<Entry>>(*m_client, "GET", kv(key), {}, {}, [client](HttpResponse response) -> std::optional<Entry> {
      if (response.status == 404) return std::nullopt;
      if (response.status != 200) std::rethrow_exception(client->answer_error("get", response));
      return entry_of(json::parse(response.body));
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
    if (expected == 0) headers.emplace_back("If-None-Match", "*");
    else headers.emplace_back("If-Match", std::to_string(expected));
    auto client = m_client;
    return call<T>(*m_client, "PUT", kv(key), value.dump(), std::move(headers), [client, result](HttpResponse response) {
      if (response.status == 412) return result(0);
      if (response.status != 200) std::rethrow_exception(client->answer_error("compare_and_set", response));
      return result(json::parse(response.body).at("revision").get<Revision>());
    });
  }

  Future<Incremented> increment_with_revision(std::string key, std::int64_t by) override {
    return add(std::move(key), by, [](Incremented i) { return i; });
  }

  template <class F>
  Future<std::invoke_result_t<F, Incremented>> add(std::string key, std::int64_t by, F result) {
    using T = decltype(result(Incremented{}));
    auto promise = std::make_shared<Promise<T>>();
    auto future = promise->get_future();
    auto client = m_client;
    m_client->request(
        "POST", "/v1/increment/" + percent_encode(key, true), json{{"by", by}}.dump(), {},
        [client, key, promise, result](std::exception_ptr error, HttpResponse response) {
          if (error) {
            promise->set_exception(error);
            return;
          }
          try {
            if (response.status == 409 && response.body.find("TypeMismatch") != std::string::npos) {
              // The server's message is the in-process store's; read the value to raise the same
              // typed error here.
              client->request("GET", kv(key), {}, {}, [key, promise](std::exception_ptr, HttpResponse got) {
                json value;
                try {
                  if (got.status == 200) value = json::parse(got.body).at("value");
                } catch (...) {
                }
                promise->set_exception(
                    std::make_exception_ptr(TypeMismatch(key, describe_json(value), "a 64-bit integer to increment")));
              });
              return;
            }
            if (response.status == 409) {
              auto body = json::parse(response.body, nullptr, false);
              throw Error(body.is_object() && body.contains("error") ? body["error"].get<std::string>() : response.body);
            }
            if (response.status != 200) std::rethrow_exception(client->answer_error("increment", response));
            auto body = json::parse(response.body);
            promise->set_value(result(Incremented{body.at("value").get<std::int64_t>(), body.at("revision").get<Revision>()}));
          } catch (...) {
            promise->set_exception(std::current_exception());
          }
        });
    return future;
  }

  Future<std::vector<Entry>> list(std::string prefix) override {
    auto client = m_client;
    return call<std::vector<Entry>>(*m_client, "GET", "/v1/kv?prefix=" + percent_encode(prefix, false), {}, {},
        [client](HttpResponse response) {
          if (response.status != 200) std::rethrow_exception(client->answer_error("list", response));
          std::vector<Entry> entries;
          for (const auto& item : json::parse(response.body)) entries.push_back(entry_of(item));
          return entries;
        });
  }

  void watch(std::string prefix, Revision from_revision, std::shared_ptr<SubscriptionQueue<Change>> queue) override {
    // NOTE: the stream's callbacks run on the client's I/O thread only, except `base`, which a
    // request's answer sets; `mutex` guards the cursor.
    struct Cursor {
      std::mutex mutex;
      Revision from = 0;     // what the first connection asks for (0: from now on)
      Revision base = 0;     // for a from-now-on watch: the first revision after it was in place
      Revision last = 0;     // the last revision delivered
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
      if (event.event == "compacted") {
        auto body = json::parse(event.data, nullptr, false);
        Revision requested = 0, oldest = 0;
        if (body.is_object()) {
          requested = body.value("requested", Revision{0});
          oldest = body.value("oldest_kept", Revision{0});
        }
        queue->set_error(std::make_exception_ptr(Compacted(requested, oldest)));
        return false;
      }
      if (event.event == "error") {
        queue->set_error(std::make_exception_ptr(Error("scale: watch failed on the store server: " + event.data)));
        return false;
      }
      auto body = json::parse(event.data, nullptr, false);
      if (!body.is_object()) return true;
      Change change{body.value("key", std::string{}), body.value("value", json()), body.value("revision", Revision{0}),
                    body.value("timestamp_ms", std::int64_t{0}), body.value("erased", false)};
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
