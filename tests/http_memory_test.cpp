// SharedMemory("http://..."): the shared behaviour suite against embedded StoreServers (a fresh
// one per store), plus what only the http:// backend has.

#include <algorithm>
#include <cstddef>
#include <string>
#include <tuple>

#include <scale/shared_memory.hpp>

#include "support/http_store.hpp"

struct Http {
  /// Each call is a request to a scale-store process: through the client's I/O thread and back.
  static constexpr int concurrent_rounds = 100;
  static scale::SharedMemory make() { return scale::SharedMemory(support::fresh_store_url()); }
  static scale::SharedMemory make_with_history(std::size_t history) {
    return scale::SharedMemory(support::fresh_store_url({.history = history}));
  }
};
using MemoryBackends = std::tuple<Http>;

#include "shared_memory_suite.hpp"

#include <scale/error.hpp>

#include "http/http_client.hpp"

namespace {

/// The store's count of answered requests to `endpoint` (all statuses), from GET /metrics.
long requests_to(const std::string& url, const std::string& endpoint) {
  scale::detail::HttpClient client(scale::detail::parse_http_url(url));
  const std::string metrics = client.request("GET", "/metrics").get().body;
  const std::string label = "scale_store_requests_total{endpoint=\"" + endpoint + "\",";
  long total = 0;
  for (std::size_t at = metrics.find(label); at != std::string::npos; at = metrics.find(label, at + 1)) {
    const std::size_t space = metrics.find(' ', at);
    total += std::stol(metrics.substr(space + 1));
  }
  return total;
}

}  // namespace

TEST_CASE("the store's typed errors are rethrown from the answer itself, with no second request", "[http]") {
  scale::Runtime runtime;
  const std::string url = support::fresh_store_url();
  scale::SharedMemory memory(url);
  memory.set("text", std::string("x")).get();
  const long gets_before = requests_to(url, "kv_get");
  try {
    memory.increment("text", 1).get();
    FAIL("the increment should have failed");
  } catch (const scale::TypeMismatch& error) {
    CHECK(error.key() == "text");
    CHECK(error.stored() == "a string");
    CHECK(error.requested() == "a 64-bit integer to increment");
  }
  CHECK(requests_to(url, "increment") == 1);
  CHECK(requests_to(url, "kv_get") == gets_before);  // the answer alone rebuilt it

  // A generic refusal stays a scale::Error naming the request and the server's message.
  try {
    memory.set(nlohmann::json{{"", 1}}).get();
    FAIL("the set should have failed");
  } catch (const scale::Error& error) {
    CHECK_THAT(std::string(error.what()), Catch::Contains("(400)") && Catch::Contains("empty"));
  }
}

TEST_CASE("list follows the store's pages, so a prefix lists all its keys", "[http]") {
  scale::Runtime runtime;
  const std::string url = support::fresh_store_url();
  scale::SharedMemory memory(url);
  nlohmann::json many = nlohmann::json::object();
  for (int i = 0; i < 10'500; ++i) many["p/" + std::to_string(100'000 + i)] = i;
  memory.set(many).get();
  memory.set("q", 1).get();
  const long lists_before = requests_to(url, "kv_list");
  auto listed = memory.list("p/").get();
  REQUIRE(listed.size() == 10'500);
  CHECK(listed.front().key == "p/100000");
  CHECK(listed.back().key == "p/110499");
  CHECK(std::is_sorted(listed.begin(), listed.end(), [](const auto& a, const auto& b) { return a.key < b.key; }));
  CHECK(requests_to(url, "kv_list") == lists_before + 2);
  CHECK(memory.list("").get().size() == 10'501);
}
