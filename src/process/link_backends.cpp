// LinkMemory and LinkEvents (process/link_backends.hpp): each call one scope_request,
// MessagePack {"op": ..., ...} as process/scope_server.cpp reads it.

#include "process/link_backends.hpp"

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/entry_json.hpp"
#include "process/worker_link.hpp"
#include <scale/error.hpp>

namespace scale::detail {

namespace {

template <class R>
Future<R> reply_as(Future<nlohmann::json> reply) {
  nlohmann::json value = co_await std::move(reply);
  co_return value.get<R>();
}

Future<std::optional<Entry>> reply_as_entry(Future<nlohmann::json> reply) {
  nlohmann::json value = co_await std::move(reply);
  if (value.is_null()) co_return std::nullopt;
  co_return value.get<Entry>();
}

Future<Incremented> reply_as_incremented(Future<nlohmann::json> reply) {
  nlohmann::json value = co_await std::move(reply);
  Incremented done{value.at("value").get<std::int64_t>(), value.at("revision").get<Revision>()};
  co_return done;
}

Future<void> reply_as_void(Future<nlohmann::json> reply) { co_await std::move(reply); }

/// A SharedMemory in a worker: every call is answered by the parent's memory.
class LinkMemory final : public MemoryBackend {
 public:
  explicit LinkMemory(WorkerLink* link) : m_link(link) {}
  Future<Revision> set_many(nlohmann::json object) override {
    nlohmann::json request = {{"op", "set"}, {"object", std::move(object)}};
    return reply_as<Revision>(m_link->call(std::move(request)));
  }
  Future<std::optional<Entry>> entry(std::string key) override {
    nlohmann::json request = {{"op", "entry"}, {"key", std::move(key)}};
    return reply_as_entry(m_link->call(std::move(request)));
  }
  Future<bool> erase(std::string key) override {
    nlohmann::json request = {{"op", "erase"}, {"key", std::move(key)}};
    return reply_as<bool>(m_link->call(std::move(request)));
  }
  Future<Revision> compare_and_set_revision(std::string key, Revision expected, nlohmann::json value) override {
    nlohmann::json request = {
        {"op", "cas"}, {"key", std::move(key)}, {"expected", expected}, {"value", std::move(value)}};
    return reply_as<Revision>(m_link->call(std::move(request)));
  }
  Future<Incremented> increment_with_revision(std::string key, std::int64_t by) override {
    nlohmann::json request = {{"op", "increment"}, {"key", std::move(key)}, {"by", by}};
    return reply_as_incremented(m_link->call(std::move(request)));
  }
  Future<std::vector<Entry>> list(std::string prefix) override {
    nlohmann::json request = {{"op", "list"}, {"prefix", std::move(prefix)}};
    return reply_as<std::vector<Entry>>(m_link->call(std::move(request)));
  }
  void watch(std::string, Revision, std::shared_ptr<SubscriptionQueue<Change>> queue) override {
    queue->set_error(std::make_exception_ptr(
        Error("scale: watch is not available inside a process-pool worker; watch in the parent")));
  }

 private:
  WorkerLink* m_link;
};

class LinkEvents final : public EventBackend {
 public:
  explicit LinkEvents(WorkerLink* link) : m_link(link) {}
  Future<void> emit(std::string event, nlohmann::json payload) override {
    nlohmann::json request = {{"op", "emit"}, {"event", std::move(event)}, {"payload", std::move(payload)}};
    return reply_as_void(m_link->call(std::move(request)));
  }
  void subscribe(std::string, std::shared_ptr<SubscriptionQueue<nlohmann::json>> queue) override {
    queue->set_error(std::make_exception_ptr(
        Error("scale: subscribing is not available inside a process-pool worker; subscribe in the parent")));
  }

 private:
  WorkerLink* m_link;
};

}  // namespace

std::shared_ptr<MemoryBackend> make_link_memory(WorkerLink& link) { return std::make_shared<LinkMemory>(&link); }
std::shared_ptr<EventBackend> make_link_events(WorkerLink& link) { return std::make_shared<LinkEvents>(&link); }

}  // namespace scale::detail
