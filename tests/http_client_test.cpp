// What only the http:// backends have: the unreachable-server message, a watch that resumes after
// the store server drops its connection, and the token in the URL.

#include <catch2/catch.hpp>

#include <scale/error.hpp>
#include <scale/runtime.hpp>
#include <scale/shared_memory.hpp>
#include <scale/store_server.hpp>
#include "http/http_client.hpp"

#include "support/recorder.hpp"

#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

std::uint16_t unused_port() {
  scale::StoreServer probe;
  probe.start();
  auto port = probe.port();
  probe.stop();
  return port;
}

}  // namespace

TEST_CASE("an unreachable http:// store fails with ConnectionError naming the URL and scale-store", "[http_client]") {
  scale::Runtime runtime;
  std::string url = "http://127.0.0.1:" + std::to_string(unused_port());
  scale::SharedMemory memory(url);
  REQUIRE_THROWS_AS(memory.set("k", 1).get(), scale::ConnectionError);
  REQUIRE_THROWS_WITH(memory.get<int>("k").get(), Catch::Contains(url) && Catch::Contains("scale-store"));
  auto watch = memory.watch("", [](const scale::Change&) {});
  REQUIRE_THROWS_AS(watch.ready().get(), scale::ConnectionError);
}

TEST_CASE("an http:// URL needs a host and a numeric port and knows only the token option", "[http_client]") {
  REQUIRE_THROWS_WITH(scale::SharedMemory("http://127.0.0.1"), Catch::Contains("host and port"));
  REQUIRE_THROWS_WITH(scale::SharedMemory("http://127.0.0.1:1?colour=red"), Catch::Contains("unknown option 'colour'"));
}

TEST_CASE("a watch resumes after the server closes its connection and misses no change", "[http_client]") {
  scale::Runtime runtime;
  // The restarted server starts empty (no --data-dir here), so the second half writes revisions
  // the watch has not seen yet: the watch must reconnect and deliver them without a gap.
  auto server = std::make_unique<scale::StoreServer>();
  server->start();
  auto port = server->port();
  scale::SharedMemory memory("http://127.0.0.1:" + std::to_string(port));
  auto recorder = std::make_shared<support::Recorder<scale::Change>>();
  auto watch = memory.watch("k/", support::into(recorder), 1);
  watch.ready().get();
  memory.set("k/a", 1).get();
  memory.set("k/b", 2).get();
  REQUIRE(recorder->wait_for(2));

  server->stop();
  server = std::make_unique<scale::StoreServer>(scale::StoreServerOptions{.port = port});
  server->start();
  // Revisions 1 and 2 again (already seen: skipped), then 3 and 4 (new: delivered).
  memory.set("k/a", 1).get();
  memory.set("k/b", 2).get();
  memory.set("k/c", 3).get();
  memory.set("k/d", 4).get();
  REQUIRE(recorder->wait_for(4));
  auto items = recorder->items();
  REQUIRE(items.size() == 4);
  REQUIRE(items[2].key == "k/c");
  REQUIRE(items[2].revision == 3);
  REQUIRE(items[3].key == "k/d");
  REQUIRE(items[3].revision == 4);
}

TEST_CASE("an http:// URL with ?token=T sends it as a Bearer token", "[http_client]") {
  scale::Runtime runtime;
  scale::StoreServer server({.token = "s3cret"});
  server.start();
  std::string base = "http://127.0.0.1:" + std::to_string(server.port());
  scale::SharedMemory with(base + "?token=s3cret");
  with.set("k", 1).get();
  REQUIRE(with.get<int>("k").get() == 1);
  auto recorder = std::make_shared<support::Recorder<scale::Change>>();
  auto watch = with.watch("", support::into(recorder));
  watch.ready().get();
  with.set("k", 2).get();
  REQUIRE(recorder->wait_for(1));

  scale::SharedMemory without(base);
  REQUIRE_THROWS_WITH(without.set("k", 3).get(), Catch::Contains("401") && Catch::Contains("token"));
}

TEST_CASE("one thread's requests keep their order while pipelined on one connection", "[http_client]") {
  scale::Runtime runtime;
  scale::StoreServer server;
  server.start();
  scale::SharedMemory memory("http://127.0.0.1:" + std::to_string(server.port()));
  std::vector<scale::Future<scale::Revision>> writes;
  for (int i = 0; i < 200; ++i) writes.push_back(memory.set("k", i));
  scale::Revision previous = 0;
  for (auto& write : writes) {
    auto revision = std::move(write).get();
    REQUIRE(revision == previous + 1);  // applied in the order made, none lost or repeated
    previous = revision;
  }
  REQUIRE(memory.get<int>("k").get() == 199);
}

TEST_CASE("threads with requests outstanding at once get connections of their own, each in order", "[http_client]") {
  scale::Runtime runtime;
  scale::StoreServer server;
  server.start();
  scale::detail::HttpClient client(scale::detail::parse_http_url("http://127.0.0.1:" + std::to_string(server.port())));
  constexpr int threads = 6, each = 40;
  std::vector<std::vector<scale::Future<scale::detail::HttpResponse>>> answers(threads);
  // Held, every thread's requests are outstanding together when the hold is released.
  auto release = client.hold();
  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t)
    writers.emplace_back([&, t] {
      for (int n = 0; n < each; ++n)
        answers[t].push_back(client.request("PUT", "/v1/kv/t" + std::to_string(t), std::to_string(n)));
    });
  for (auto& writer : writers) writer.join();
  release();
  for (auto& list : answers)
    for (auto& answer : list) REQUIRE(std::move(answer).get().status == 200);
  REQUIRE(client.connections_for_tests() == 4);  // the pool's size, shared by six threads
  for (int t = 0; t < threads; ++t) {
    auto got = client.request("GET", "/v1/kv/t" + std::to_string(t)).get();
    REQUIRE(nlohmann::json::parse(got.body)["value"] == each - 1);
  }
}

TEST_CASE("requests pipelined on a connection the server closed while idle are sent again", "[http_client]") {
  scale::Runtime runtime;
  scale::StoreServer server({.header_timeout = std::chrono::milliseconds(200)});
  server.start();
  scale::SharedMemory memory("http://127.0.0.1:" + std::to_string(server.port()));
  memory.set("k", 0).get();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the server closes the idle connection
  std::vector<scale::Future<scale::Revision>> writes;
  for (int i = 1; i <= 20; ++i) writes.push_back(memory.set("k", i));
  for (auto& write : writes) REQUIRE(std::move(write).get() > 0);
  REQUIRE(memory.get<int>("k").get() == 20);
}

TEST_CASE("a client destroyed by one of its own callbacks ends after that callback, on its own thread",
          "[http_client]") {
  // The destructor runs on the client's I/O thread, which it detaches; what it posts there must
  // not free the client's io_context while that thread still runs it (ASan saw a use-after-free).
  scale::Runtime runtime;
  scale::StoreServer server;
  server.start();
  for (int round = 0; round < 20; ++round) {
    auto client = std::make_shared<scale::detail::HttpClient>(
        scale::detail::parse_http_url("http://127.0.0.1:" + std::to_string(server.port())));
    std::promise<int> answered;
    auto status = answered.get_future();
    auto* raw = client.get();
    raw->request(
        "GET", "/healthz", {}, {},
        [client = std::move(client), &answered](std::exception_ptr, scale::detail::HttpResponse response) mutable {
          const int code = response.status;
          client.reset();  // the last reference: destroys the client on its own I/O thread
          answered.set_value(code);
        });
    REQUIRE(status.get() == 200);
  }
}
