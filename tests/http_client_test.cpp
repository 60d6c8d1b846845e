// What only the http:// backends have: the unreachable-server message, a watch that resumes after
// the store server drops its connection, and the token in the URL.

#include <catch2/catch.hpp>

#include <scale/error.hpp>
#include <scale/runtime.hpp>
#include <scale/shared_memory.hpp>
#include <scale/store_server.hpp>

#include "support/recorder.hpp"

#include <memory>
#include <string>

namespace {

std::uint16_t unused_port() {
  scale::StoreServer probe;
  probe.start();
  auto port = probe.port();
  probe.stop();
  return port;
}

}  // namespace

TEST_CASE("an unreachable http:// store fails with ConnectionError naming the URL and scale-store",
          "[http_client]") {
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
