// The SharedMemory behaviour suite on the memory a process-pool child reaches through its link:
// every call of the suite is made inside a child, through its Scope (the child's link memory),
// on an in-process SharedMemory of this process. So the child's memory raises the same types for
// the same misuse as every other backend, and they reach the caller of the map as those types.
//
// main() builds the Runtime from argc/argv first: in a worker it serves tasks and never returns.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <unistd.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace link_memory {

using json = nlohmann::json;

json entry_json(const scale::Entry& entry) {
  return {
      {"key", entry.key}, {"value", entry.value}, {"revision", entry.revision}, {"timestamp_ms", entry.timestamp_ms}};
}

scale::Entry entry_of(const json& value) {
  return scale::Entry{value.at("key").get<std::string>(), value.at("value"),
                      value.at("revision").get<scale::Revision>(), value.at("timestamp_ms").get<std::int64_t>()};
}

/// Runs in the child: one MemoryBackend call (a JSON request) made through the child's Scope, and
/// its answer as JSON text. What the call throws is what the map fails with.
auto call_in_child = [](std::string text, scale::Scope& scope) -> scale::Future<std::string> {
  const json call = json::parse(text);
  const std::string op = call.at("op").get<std::string>();
  json answer;
  if (op == "set") {
    scale::Future<scale::Revision> written = scope.set(call.at("object"));
    answer = co_await std::move(written);
  } else if (op == "entry") {
    scale::Future<std::optional<scale::Entry>> found = scope.entry(call.at("key").get<std::string>());
    std::optional<scale::Entry> entry = co_await std::move(found);
    answer = entry ? entry_json(*entry) : json(nullptr);
  } else if (op == "erase") {
    scale::Future<bool> erased = scope.erase(call.at("key").get<std::string>());
    answer = co_await std::move(erased);
  } else if (op == "cas") {
    const std::string key = call.at("key").get<std::string>();
    scale::Future<bool> swapped = scope.compare_and_set(key, call.at("expected").get<scale::Revision>(),
                                                        call.at("value"));
    const bool done = co_await std::move(swapped);
    answer = 0;
    if (done) {
      // A Scope answers whether the swap happened; the backend form answers its revision, read
      // back here (SharedMemory, and so the suite, looks only at whether it is 0).
      scale::Future<std::optional<scale::Entry>> found = scope.entry(key);
      std::optional<scale::Entry> entry = co_await std::move(found);
      answer = entry ? entry->revision : scale::Revision{0};
    }
  } else if (op == "increment") {
    const std::string key = call.at("key").get<std::string>();
    scale::Future<std::int64_t> sum = scope.increment(key, call.at("by").get<std::int64_t>());
    const std::int64_t value = co_await std::move(sum);
    scale::Future<std::optional<scale::Entry>> found = scope.entry(key);  // the revision, as for cas
    std::optional<scale::Entry> entry = co_await std::move(found);
    answer = {{"value", value}, {"revision", entry ? entry->revision : scale::Revision{0}}};
  } else if (op == "list") {
    scale::Future<std::vector<scale::Entry>> listed = scope.list(call.at("prefix").get<std::string>());
    std::vector<scale::Entry> entries = co_await std::move(listed);
    answer = json::array();
    for (const auto& entry : entries) answer.push_back(entry_json(entry));
  } else if (op == "pid") {
    answer = static_cast<int>(::getpid());
  } else {
    throw scale::Error("link_memory_test: unknown call '" + op + "'");
  }
  co_return answer.dump();
};

/// Runs `request` in a child of `manager` whose scope is `parent`; the child's answer.
scale::Future<json> run_in_child(scale::ScalabilityManager* manager, scale::SharedMemory* parent, json request) {
  std::vector<std::string> items{request.dump()};
  scale::Iterator<std::string> calls(std::move(items), *manager);
  calls.use_scope(*parent);
  scale::Future<std::vector<std::string>> mapped = calls.map(call_in_child);
  std::vector<std::string> answers = co_await std::move(mapped);
  co_return json::parse(answers.at(0));
}

template <class T>
scale::Future<T> answer_as(scale::Future<json> answer) {
  json value = co_await std::move(answer);
  co_return value.get<T>();
}

scale::Future<scale::detail::Incremented> answer_as_incremented(scale::Future<json> answer) {
  json value = co_await std::move(answer);
  scale::detail::Incremented done{value.at("value").get<std::int64_t>(), value.at("revision").get<scale::Revision>()};
  co_return done;
}

scale::Future<std::optional<scale::Entry>> answer_as_entry(scale::Future<json> answer) {
  json value = co_await std::move(answer);
  if (value.is_null()) co_return std::nullopt;
  co_return entry_of(value);
}

scale::Future<std::vector<scale::Entry>> answer_as_entries(scale::Future<json> answer) {
  json value = co_await std::move(answer);
  std::vector<scale::Entry> entries;
  for (const auto& item : value) entries.push_back(entry_of(item));
  co_return entries;
}

/// A SharedMemory backend whose every call is made inside a process-pool child, through its Scope.
class ChildScopeMemory final : public scale::detail::MemoryBackend {
 public:
  explicit ChildScopeMemory(scale::SharedMemory::Options options)
      : m_parent(options), m_manager(scale::ProcessPoolOptions{.max_workers = 4, .min_workers = 1}) {}

  scale::Future<scale::Revision> set_many(json object) override {
    return answer_as<scale::Revision>(ask({{"op", "set"}, {"object", std::move(object)}}));
  }
  scale::Future<std::optional<scale::Entry>> entry(std::string key) override {
    return answer_as_entry(ask({{"op", "entry"}, {"key", std::move(key)}}));
  }
  scale::Future<bool> erase(std::string key) override {
    return answer_as<bool>(ask({{"op", "erase"}, {"key", std::move(key)}}));
  }
  scale::Future<scale::Revision> compare_and_set_revision(std::string key, scale::Revision expected,
                                                          json value) override {
    return answer_as<scale::Revision>(
        ask({{"op", "cas"}, {"key", std::move(key)}, {"expected", expected}, {"value", std::move(value)}}));
  }
  scale::Future<scale::detail::Incremented> increment_with_revision(std::string key, std::int64_t by) override {
    return answer_as_incremented(ask({{"op", "increment"}, {"key", std::move(key)}, {"by", by}}));
  }
  scale::Future<std::vector<scale::Entry>> list(std::string prefix) override {
    return answer_as_entries(ask({{"op", "list"}, {"prefix", std::move(prefix)}}));
  }
  void watch(std::string, scale::Revision,
             std::shared_ptr<scale::detail::SubscriptionQueue<scale::Change>> queue) override {
    // A Scope has no watch, and the child's link memory refuses one (LinkMemory::watch).
    queue->set_error(std::make_exception_ptr(
        scale::Error("link_memory_test: a process-pool child cannot watch; watch in the parent")));
  }

  /// The pid of the process that runs the calls.
  int child_pid() { return answer_as<int>(ask({{"op", "pid"}})).get(); }
  /// The memory the child's calls reach.
  scale::SharedMemory& parent() { return m_parent; }

 private:
  scale::Future<json> ask(json request) { return run_in_child(&m_manager, &m_parent, std::move(request)); }

  scale::SharedMemory m_parent;  // NOTE: declared first, so the pool (and its maps) goes before it
  scale::ProcessPoolManager m_manager;
};

}  // namespace link_memory

struct ChildLink {
  /// Why the suite's watch cases do not run here (the suite skips them for this backend only).
  static constexpr const char* cannot_watch =
      "a process-pool child's link memory cannot watch (it fails every watch with a scale::Error saying to "
      "watch in the parent), and a Scope offers no watch";
  /// Each call is a one-item map into a child and a link call back: a dozen thread hops.
  static constexpr int concurrent_rounds = 100;
  static scale::SharedMemory make() {
    return scale::SharedMemory(std::make_shared<link_memory::ChildScopeMemory>(scale::SharedMemory::Options{}));
  }
  static scale::SharedMemory make_with_history(std::size_t history) {
    return scale::SharedMemory(
        std::make_shared<link_memory::ChildScopeMemory>(scale::SharedMemory::Options{.history = history}));
  }
};
using MemoryBackends = std::tuple<ChildLink>;

#include "shared_memory_suite.hpp"

TEST_CASE("the child's calls really run in a child process, on this process's memory",
          "[shared_memory][process_pool]") {
  scale::Runtime runtime;
  auto backend = std::make_shared<link_memory::ChildScopeMemory>(scale::SharedMemory::Options{});
  scale::SharedMemory memory(backend);
  const int child = backend->child_pid();
  REQUIRE(child != static_cast<int>(::getpid()));
  memory.set("k", 1).get();
  REQUIRE(memory.increment("n", 2).get() == 2);
  REQUIRE(backend->parent().get<int>("k").get() == 1);
  REQUIRE(backend->parent().get<int>("n").get() == 2);
  // The parent's TypeMismatch for the child's increment reaches the child's function as a
  // TypeMismatch, and the caller of the map as one, with its fields.
  backend->parent().set("text", std::string("x")).get();
  try {
    memory.increment("text", 1).get();
    FAIL("the increment should have failed");
  } catch (const scale::TypeMismatch& error) {
    CHECK(error.key() == "text");
    CHECK(error.stored() == "a string");
  }
}

int main(int argc, char** argv) {
  // In a worker this serves tasks and never returns. In the parent the Runtime goes away again:
  // each test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
