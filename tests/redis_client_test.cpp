// The Redis client under the redis:// backends: URLs, pipelining, errors, scripts, reconnection.
// Each test talks to a redis-server it (or the executable) started, and stops only that one.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "redis/redis_client.hpp"
#include <scale/error.hpp>
#include <scale/runtime.hpp>

#include "support/redis_server.hpp"

using scale::detail::parse_redis_url;
using scale::detail::RedisClient;
using scale::detail::RedisReply;
using scale::detail::RedisScript;

namespace {

std::string key(const std::string& name) { return "{client-test}:" + name; }

/// Retries `command` until it succeeds (the client reconnects with backoff), at most 10 s.
RedisReply until_answered(RedisClient& client, std::vector<std::string> command) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    try {
      return client.command(command).get();
    } catch (const scale::ConnectionError&) {
      if (std::chrono::steady_clock::now() > deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

}  // namespace

TEST_CASE("redis URLs give host, port, password, database and options", "[redis]") {
  auto full = parse_redis_url("redis://:secret@example.com:6380/3?namespace=app&history=50");
  REQUIRE(full.host == "example.com");
  REQUIRE(full.port == "6380");
  REQUIRE(full.password == "secret");
  REQUIRE(full.db == 3);
  REQUIRE(full.query.size() == 2);
  REQUIRE(full.query[0] == std::pair<std::string, std::string>("namespace", "app"));
  REQUIRE(full.text.find("secret") == std::string::npos);  // messages never show the password
  auto plain = parse_redis_url("redis://localhost");
  REQUIRE(plain.host == "localhost");
  REQUIRE(plain.port == "6379");
  REQUIRE(plain.db == 0);
  REQUIRE_THROWS_WITH(parse_redis_url("http://x:1"), Catch::Contains("redis://"));
  REQUIRE_THROWS_WITH(parse_redis_url("redis://x:port"), Catch::Contains("port"));
  REQUIRE_THROWS_WITH(parse_redis_url("redis://x:1/db"), Catch::Contains("database"));
}

TEST_CASE("pipelined commands complete in the order sent", "[redis]") {
  scale::Runtime runtime;
  RedisClient client(parse_redis_url(support::RedisServer::shared().url()));
  client.command({"DEL", key("counter"), key("list")}).get();
  constexpr int count = 2000;
  std::vector<scale::Future<RedisReply>> replies;
  replies.reserve(count * 2);
  for (int i = 0; i < count; ++i) {
    replies.push_back(client.command({"INCR", key("counter")}));
    replies.push_back(client.command({"RPUSH", key("list"), std::to_string(i)}));
  }
  bool ordered = true;
  for (int i = 0; i < count; ++i) {
    if (replies[2 * i].get().integer != i + 1) ordered = false;
    if (replies[2 * i + 1].get().integer != i + 1) ordered = false;
  }
  REQUIRE(ordered);
  auto list = client.command({"LRANGE", key("list"), "0", "-1"}).get();
  REQUIRE(list.type == RedisReply::Type::array);
  REQUIRE(list.elements.size() == count);
  REQUIRE(list.elements[0].str == "0");
  REQUIRE(list.elements[count - 1].str == std::to_string(count - 1));
  REQUIRE(client.command({"GET", key("missing")}).get().is_nil());
  REQUIRE(client.command({"PING"}).get().str == "PONG");
  // Binary-safe arguments (hiredis formats them with their lengths).
  std::string binary("a\0b\r\nc", 6);
  client.command({"SET", key("binary"), binary}).get();
  REQUIRE(client.command({"GET", key("binary")}).get().str == binary);
}

TEST_CASE("commands sent from several threads at once keep each thread's order", "[redis]") {
  scale::Runtime runtime;
  RedisClient client(parse_redis_url(support::RedisServer::shared().url()));
  constexpr int threads = 4;
  constexpr int count = 5000;
  for (int t = 0; t < threads; ++t) client.command({"DEL", key("thread-" + std::to_string(t))}).get();
  // Each thread sends its commands without waiting, so they are queued and written in batches
  // that mix the threads; every reply must still come to its own command, in its thread's order.
  std::atomic<int> answered{0};
  std::atomic<int> misordered{0};
  std::vector<std::thread> senders;
  for (int t = 0; t < threads; ++t) {
    senders.emplace_back([&, t] {
      auto last = std::make_shared<std::int64_t>(0);  // the length its previous RPUSH answered
      for (int i = 0; i < count; ++i) {
        client.send(RedisClient::Role::commands, {"RPUSH", key("thread-" + std::to_string(t)), std::to_string(i)},
                    [&, last, i](std::exception_ptr error, RedisReply reply) {
                      // Callbacks run on the client's one I/O thread, so `last` needs no lock.
                      if (error || reply.integer != i + 1 || *last != i) ++misordered;
                      *last = reply.integer;
                      ++answered;
                    });
      }
    });
  }
  for (auto& sender : senders) sender.join();
  REQUIRE(client.command({"PING"}).get().str == "PONG");  // sent after every RPUSH: answered after them
  REQUIRE(answered == threads * count);
  CHECK(misordered == 0);
  for (int t = 0; t < threads; ++t) {
    auto list = client.command({"LRANGE", key("thread-" + std::to_string(t)), "0", "-1"}).get();
    REQUIRE(list.elements.size() == count);
    bool ordered = true;
    for (int i = 0; i < count; ++i) ordered = ordered && list.elements[i].str == std::to_string(i);
    CHECK(ordered);
  }
}

TEST_CASE("a Redis error fails the command with scale::Error carrying Redis's message", "[redis]") {
  scale::Runtime runtime;
  RedisClient client(parse_redis_url(support::RedisServer::shared().url()));
  client.command({"SET", key("text"), "x"}).get();
  REQUIRE_THROWS_AS(client.command({"INCR", key("text")}).get(), scale::Error);
  REQUIRE_THROWS_WITH(client.command({"INCR", key("text")}).get(),
                      Catch::Contains("not an integer") && Catch::Contains("INCR") &&
                          Catch::Contains(support::RedisServer::shared().url()));
  REQUIRE_THROWS_WITH(client.command({"NOSUCHCOMMAND"}).get(), Catch::Contains("unknown command"));
  // The connection goes on serving after errors.
  REQUIRE(client.command({"GET", key("text")}).get().str == "x");
}

TEST_CASE("scripts run by SHA-1 and are loaded again after SCRIPT FLUSH", "[redis]") {
  scale::Runtime runtime;
  RedisClient client(parse_redis_url(support::RedisServer::shared().url()));
  RedisScript script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}");
  REQUIRE(script.sha1.size() == 40);
  client.command({"DEL", key("script")}).get();
  auto first = client.run(script, {key("script")}, {"hello"}).get();
  REQUIRE(first.elements.size() == 3);
  REQUIRE(first.elements[1].str == "hello");
  REQUIRE(first.elements[2].integer == 1);
  // Redis computed the same SHA-1.
  REQUIRE(client.command({"SCRIPT", "EXISTS", script.sha1}).get().elements[0].integer == 1);
  client.command({"SCRIPT", "FLUSH"}).get();
  REQUIRE(client.command({"SCRIPT", "EXISTS", script.sha1}).get().elements[0].integer == 0);
  auto again = client.run(script, {key("script")}, {"again"}).get();
  REQUIRE(again.elements[2].integer == 2);
  REQUIRE(client.command({"SCRIPT", "EXISTS", script.sha1}).get().elements[0].integer == 1);
  // An error raised by a script is a scale::Error too.
  RedisScript failing("return redis.error_reply('my own failure')");
  REQUIRE_THROWS_WITH(client.run(failing, {}, {}).get(), Catch::Contains("my own failure"));
}

TEST_CASE("an unreachable Redis fails commands with ConnectionError naming the URL", "[redis]") {
  scale::Runtime runtime;
  int port = support::RedisServer::free_port();
  std::string url = "redis://127.0.0.1:" + std::to_string(port);
  RedisClient client(parse_redis_url(url));
  auto started = std::chrono::steady_clock::now();
  REQUIRE_THROWS_AS(client.command({"PING"}).get(), scale::ConnectionError);
  REQUIRE_THROWS_WITH(client.command({"PING"}).get(), Catch::Contains(url) && Catch::Contains("redis-server"));
  REQUIRE(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
}

TEST_CASE("the client reconnects after the server restarts", "[redis]") {
  scale::Runtime runtime;
  support::RedisServer server;
  RedisClient client(parse_redis_url(server.url()));
  REQUIRE(client.command({"SET", "k", "1"}).get().str == "OK");
  server.stop();
  REQUIRE_THROWS_AS(client.command({"PING"}).get(), scale::ConnectionError);
  server.start();
  REQUIRE(until_answered(client, {"PING"}).str == "PONG");
  REQUIRE(client.command({"GET", "k"}).get().is_nil());  // a server without persistence starts empty
}

TEST_CASE("a password and a database in the URL are sent as AUTH and SELECT", "[redis]") {
  scale::Runtime runtime;
  support::RedisServer server(0, {"--requirepass", "secret"});
  std::string address = "127.0.0.1:" + std::to_string(server.port());
  RedisClient client(parse_redis_url("redis://:secret@" + address + "/2"));
  client.command({"SET", "k", "in db 2"}).get();
  REQUIRE(client.command({"CLIENT", "INFO"}).get().str.find("db=2") != std::string::npos);
  RedisClient db0(parse_redis_url("redis://:secret@" + address));
  REQUIRE(db0.command({"GET", "k"}).get().is_nil());
  RedisClient wrong(parse_redis_url("redis://:wrong@" + address));
  REQUIRE_THROWS_WITH(wrong.command({"PING"}).get(), Catch::Contains("AUTH"));
  RedisClient none(parse_redis_url("redis://" + address));
  REQUIRE_THROWS_WITH(none.command({"PING"}).get(), Catch::Contains("NOAUTH"));
}
