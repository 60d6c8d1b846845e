// redis:// against a Redis Cluster of three masters that the test starts (tests/support/redis_cluster.hpp):
// the client's hash slots, MOVED, ASK, TRYAGAIN, a redirection loop and CROSSSLOT, and the
// SharedMemory and SharedEventEmitter behaviour suites through a URL that names one node while
// each store's keys live on another.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <scale/error.hpp>
#include <scale/runtime.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>

#include "redis/command_key.hpp"
#include "redis/hash_slot.hpp"
#include "redis/redirection.hpp"
#include "redis/redis_client.hpp"
#include "support/eventually.hpp"
#include "support/redis_cluster.hpp"
#include "support/redis_server.hpp"

namespace {

using scale::detail::parse_redis_url;
using scale::detail::RedisClient;
using support::eventually;
using support::RedisCluster;

/// A namespace whose hash tag {scale:NAME} lies on a node other than `avoid`, as the cluster
/// itself says (CLUSTER KEYSLOT, CLUSTER SLOTS): a URL naming `avoid` is then redirected.
std::string namespace_off(std::size_t avoid) {
  auto& cluster = RedisCluster::shared();
  for (;;) {
    auto name = support::RedisServer::fresh_namespace();
    if (cluster.owner(cluster.keyslot("{scale:" + name + "}")) != avoid) return name;
  }
}

/// A hash tag whose slot lies on `node` (as the cluster says).
std::string tag_on(std::size_t node, const std::string& stem) {
  auto& cluster = RedisCluster::shared();
  for (int i = 0;; ++i) {
    std::string tag = "{" + stem + "-" + std::to_string(i) + "}";
    if (cluster.owner(cluster.keyslot(tag)) == node) return tag;
  }
}

}  // namespace

// --- the behaviour suites through node 0; every store's keys are on node 1 or 2 ------------------

struct ClusterMemory {
  static std::string url() { return RedisCluster::shared().url(0) + "?namespace=" + namespace_off(0); }
  static scale::SharedMemory make() { return scale::SharedMemory(url()); }
  static scale::SharedMemory make_with_history(std::size_t history) {
    return scale::SharedMemory(url() + "&history=" + std::to_string(history));
  }
};
using MemoryBackends = std::tuple<ClusterMemory>;

// Channels have no slot (a cluster passes every PUBLISH to every node): the bus stays on node 0.
struct ClusterBus {
  static scale::SharedEventEmitter make_events() {
    return scale::SharedEventEmitter(RedisCluster::shared().url(0) +
                                     "?namespace=" + support::RedisServer::fresh_namespace());
  }
};
using EventBackends = std::tuple<ClusterBus>;

#include "shared_event_emitter_suite.hpp"
#include "shared_memory_suite.hpp"

// --- hash slots and routing, without a cluster ---------------------------------------------------

TEST_CASE("CRC16 and hash slots give the values the Redis Cluster specification documents", "[redis][cluster]") {
  using scale::detail::crc16_xmodem;
  using scale::detail::redis_hash_slot;
  using scale::detail::redis_hash_tag;
  REQUIRE(crc16_xmodem("123456789") == 0x31C3);
  REQUIRE(crc16_xmodem("") == 0);
  REQUIRE(redis_hash_slot("somekey") == 11058);
  REQUIRE(redis_hash_slot("foo{hash_tag}") == 2515);
  REQUIRE(redis_hash_slot("bar{hash_tag}") == 2515);
  REQUIRE(redis_hash_slot("{user1000}.following") == redis_hash_slot("{user1000}.followers"));
  // The tag rules: the first '{', the first '}' after it, and not empty.
  REQUIRE(redis_hash_tag("{user1000}.following") == "user1000");
  REQUIRE(redis_hash_tag("foo{}{bar}") == "foo{}{bar}");
  REQUIRE(redis_hash_tag("foo{{bar}}zap") == "{bar");
  REQUIRE(redis_hash_tag("foo{bar}{zap}") == "bar");
  REQUIRE(redis_hash_tag("no tag") == "no tag");
  REQUIRE(redis_hash_tag("{unclosed") == "{unclosed");
  // Every key of a store sits under its tag.
  REQUIRE(redis_hash_tag("{scale:jobs}:data") == "scale:jobs");
  REQUIRE(redis_hash_slot("{scale:jobs}:data") == redis_hash_slot("{scale:jobs}:event:done"));
  // A namespace with braces of its own still puts the store's keys under one tag: the first '}'.
  REQUIRE(redis_hash_tag("{scale:a}b{c}:data") == "scale:a");
  REQUIRE(redis_hash_slot("{scale:a}b{c}:data") == redis_hash_slot("{scale:a}b{c}:revision"));
}

TEST_CASE("a command is routed by its first key, wherever its shape puts it", "[redis][cluster]") {
  using scale::detail::routing_key;
  using V = std::vector<std::string>;
  auto key = [](V args) { return routing_key(args); };
  REQUIRE(key({"GET", "k"}) == "k");
  REQUIRE(key({"hset", "h", "f", "v"}) == "h");
  REQUIRE(key({"PING"}) == std::nullopt);
  REQUIRE(key({"PUBLISH", "channel", "x"}) == std::nullopt);
  REQUIRE(key({"subscribe", "channel"}) == std::nullopt);
  REQUIRE(key({"CLUSTER", "KEYSLOT", "k"}) == std::nullopt);
  REQUIRE(key({"EVALSHA", "sha", "2", "a", "b", "arg"}) == "a");
  REQUIRE(key({"EVAL", "return 1", "0"}) == std::nullopt);
  REQUIRE(key({"XREAD", "COUNT", "10", "BLOCK", "1000", "STREAMS", "s", "0-0"}) == "s");
  REQUIRE(key({"xreadgroup", "GROUP", "g", "c", "streams", "s", ">"}) == "s");
  REQUIRE(key({"XGROUP", "CREATE", "s", "g", "0", "MKSTREAM"}) == "s");
  REQUIRE(key({"XGROUP", "HELP"}) == std::nullopt);
  REQUIRE(key({"XINFO", "STREAM", "s"}) == "s");
  REQUIRE(key({"MEMORY", "USAGE", "k"}) == "k");
  REQUIRE(key({"MEMORY", "STATS"}) == std::nullopt);
  REQUIRE(key({"LMPOP", "2", "a", "b", "LEFT"}) == "a");
  REQUIRE(key({"BLMPOP", "0", "1", "a", "LEFT"}) == "a");
}

TEST_CASE("MOVED, ASK and TRYAGAIN answers are read as redirections, other errors are not", "[redis][cluster]") {
  using scale::detail::parse_redirection;
  using Kind = scale::detail::Redirection::Kind;
  auto moved = parse_redirection("MOVED 3999 127.0.0.1:6381");
  REQUIRE(moved);
  REQUIRE(moved->kind == Kind::moved);
  REQUIRE(moved->slot == 3999);
  REQUIRE(moved->host == "127.0.0.1");
  REQUIRE(moved->port == "6381");
  auto ask = parse_redirection("ASK 8000 10.0.0.7:6461");
  REQUIRE(ask);
  REQUIRE(ask->kind == Kind::ask);
  REQUIRE(ask->slot == 8000);
  REQUIRE(ask->host == "10.0.0.7");
  auto unknown_endpoint = parse_redirection("MOVED 3999 :6380");  // the host of the node that answered
  REQUIRE(unknown_endpoint);
  REQUIRE(unknown_endpoint->host.empty());
  REQUIRE(unknown_endpoint->port == "6380");
  auto ipv6 = parse_redirection("MOVED 1 ::1:7000");
  REQUIRE(ipv6);
  REQUIRE(ipv6->host == "::1");
  REQUIRE(ipv6->port == "7000");
  auto again = parse_redirection("TRYAGAIN Multiple keys request during rehashing of slot");
  REQUIRE(again);
  REQUIRE(again->kind == Kind::tryagain);
  REQUIRE_FALSE(parse_redirection("ERR unknown command"));
  REQUIRE_FALSE(parse_redirection("MOVED 16384 127.0.0.1:1"));
  REQUIRE_FALSE(parse_redirection("MOVED x 127.0.0.1:1"));
  REQUIRE_FALSE(parse_redirection("MOVED 12 127.0.0.1"));
  REQUIRE_FALSE(parse_redirection("CROSSSLOT Keys in request don't hash to the same slot"));
}

// --- against the cluster -------------------------------------------------------------------------

TEST_CASE("the client's hash slots agree with the cluster's CLUSTER KEYSLOT", "[redis][cluster]") {
  auto& cluster = RedisCluster::shared();
  std::vector<std::string> keys{"123456789", "somekey", "{scale}:data", "{scale:jobs}:changes", "a{b}c", "{}x", "ü-ß"};
  for (int i = 0; i < 200; ++i) keys.push_back("key:" + std::to_string(i * 7919));
  for (const auto& key : keys) {
    INFO(key);
    REQUIRE(scale::detail::redis_hash_slot(key) == cluster.keyslot(key));
  }
}

TEST_CASE("a command for a slot on another node follows MOVED, and one MOVED teaches the whole map",
          "[redis][cluster]") {
  scale::Runtime runtime;
  auto& cluster = RedisCluster::shared();
  const auto on_1 = tag_on(1, "moved") + ":k";
  const auto on_2 = tag_on(2, "moved") + ":k";
  // Node 0 itself would not serve them.
  REQUIRE_THROWS_WITH(cluster.command(0, {"GET", on_1}), Catch::Contains("MOVED"));

  RedisClient client(parse_redis_url(cluster.url(0)));
  client.command({"SET", on_1, "one"}).get();
  REQUIRE(client.redirections().moved == 1);
  REQUIRE(cluster.text(1, {"GET", on_1}) == "one");  // it is on node 1
  // The MOVED made the client read CLUSTER SLOTS: the next keys go straight to their nodes.
  client.command({"SET", on_2, "two"}).get();
  REQUIRE(client.command({"GET", on_1}).get().str == "one");
  REQUIRE(client.command({"GET", on_2}).get().str == "two");
  REQUIRE(client.redirections().moved == 1);
  REQUIRE(cluster.text(2, {"GET", on_2}) == "two");
}

TEST_CASE("pipelined commands for one slot complete in the order sent while MOVED redirects them", "[redis][cluster]") {
  scale::Runtime runtime;
  auto& cluster = RedisCluster::shared();
  const std::string keys[2] = {tag_on(1, "order") + ":n", tag_on(2, "order") + ":n"};
  RedisClient client(parse_redis_url(cluster.url(0)));
  std::mutex mutex;
  std::vector<std::int64_t> seen[2];
  std::atomic<int> errors{0};
  std::atomic<int> answered{0};
  constexpr int per_key = 5'000;
  // Sent without waiting: the first ones go to node 0 and come back MOVED, the later ones go
  // straight to the nodes of their keys.
  for (int i = 0; i < per_key; ++i) {
    for (int k = 0; k < 2; ++k) {
      client.send(RedisClient::Role::commands, {"INCR", keys[k]},
                  [&, k](std::exception_ptr error, scale::detail::RedisReply reply) {
                    if (error || reply.is_error()) ++errors;
                    {
                      std::lock_guard lock(mutex);
                      seen[k].push_back(reply.integer);
                    }
                    ++answered;
                  });
    }
  }
  REQUIRE(eventually([&] { return answered.load() == 2 * per_key; }));
  REQUIRE(errors.load() == 0);
  REQUIRE(client.redirections().moved >= 1);
  std::vector<std::int64_t> expected(per_key);
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = static_cast<std::int64_t>(i) + 1;
  std::lock_guard lock(mutex);
  REQUIRE(seen[0] == expected);
  REQUIRE(seen[1] == expected);
}

TEST_CASE("a command sent once the map is known waits for an earlier one still on its way to a MOVED",
          "[redis][cluster]") {
  scale::Runtime runtime;
  auto& cluster = RedisCluster::shared();
  const auto counter = tag_on(1, "overtake") + ":n";
  const auto queue = tag_on(0, "overtake") + ":q";
  RedisClient client(parse_redis_url(cluster.url(0)));
  client.command({"PING"}).get();
  // Node 0 holds its commands connection on an empty BLPOP for half a second; the first INCR
  // waits behind it there, to be answered MOVED only then.
  auto blocked = client.command({"BLPOP", queue, "0.5"});
  auto first = client.command({"INCR", counter});
  // Meanwhile the blocking connection meets the MOVED and teaches the client the slot's node...
  std::promise<scale::detail::RedisReply> taught;
  client.send(RedisClient::Role::blocking, {"GET", counter},
              [&](std::exception_ptr, scale::detail::RedisReply reply) { taught.set_value(std::move(reply)); });
  REQUIRE(taught.get_future().get().is_nil());
  REQUIRE(client.redirections().moved == 1);
  // ...so this INCR would go straight to node 1 and run before the first: it waits for it.
  auto second = client.command({"INCR", counter});
  REQUIRE(blocked.get().is_nil());
  REQUIRE(first.get().integer == 1);
  REQUIRE(second.get().integer == 2);
}

TEST_CASE("a redis:// SharedMemory named by one node keeps its keys on the node of its tag", "[redis][cluster]") {
  scale::Runtime runtime;
  auto& cluster = RedisCluster::shared();
  const auto name = namespace_off(0);
  const auto holder = cluster.owner(cluster.keyslot("{scale:" + name + "}"));
  REQUIRE(holder != 0);
  scale::SharedMemory memory(cluster.url(0) + "?namespace=" + name);
  REQUIRE(memory.set(nlohmann::json{{"a", 1}, {"b", "two"}}).get() == 1);
  REQUIRE(memory.increment("n", 5).get() == 5);
  REQUIRE(memory.get<std::string>("b").get() == "two");
  // The store's hash is on the tag's node, none of it on node 0.
  const std::string data = "{scale:" + name + "}:data";
  REQUIRE(cluster.text(holder, {"EXISTS", data}) == "1");
  REQUIRE(cluster.text(0, {"CLUSTER", "COUNTKEYSINSLOT", std::to_string(cluster.keyslot(data))}) == "0");
  // Braces in a namespace cannot split a store over two slots: its scripts still run.
  scale::SharedMemory braced(cluster.url(0) + "?namespace=" + name + "}x{y");
  REQUIRE(braced.set(nlohmann::json{{"a", 1}, {"b", 2}}).get() == 1);
  REQUIRE(braced.increment("a").get() == 2);
}

TEST_CASE("an ASK during a slot migration is followed once, and a TRYAGAIN is waited out", "[redis][cluster]") {
  scale::Runtime runtime;
  auto& cluster = RedisCluster::shared();
  const std::size_t source = 1;
  const std::size_t target = 2;
  const auto tag = tag_on(source, "ask");
  const auto slot = std::to_string(cluster.keyslot(tag));
  const auto a = tag + ":a";
  const auto b = tag + ":b";

  RedisClient client(parse_redis_url(cluster.url(0)));
  client.command({"SET", a, "1"}).get();
  client.command({"SET", b, "2"}).get();
  const auto moved = client.redirections().moved;

  // Migrate `a` only: the slot stays the source's, `a` is on the target.
  cluster.command(target, {"CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.id(source)});
  cluster.command(source, {"CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.id(target)});
  cluster.command(source, {"MIGRATE", "127.0.0.1", std::to_string(cluster.port(target)), "", "0", "5000", "KEYS", a});

  REQUIRE(client.command({"GET", a}).get().str == "1");  // the source answers ASK; ASKING, GET on the target
  REQUIRE(client.redirections().ask == 1);
  // The map did not change: `b` is still read from the source, with no redirection at all.
  REQUIRE(client.command({"GET", b}).get().str == "2");
  REQUIRE(client.redirections().ask == 1);
  REQUIRE(client.redirections().moved == moved);

  // A command on both keys meets them on two nodes: TRYAGAIN until the migration ends.
  const scale::detail::RedisScript both("return redis.call('GET', KEYS[1]) .. redis.call('GET', KEYS[2])");
  auto joined = client.run(both, {a, b}, {});
  REQUIRE(eventually([&] { return client.redirections().tryagain >= 1; }, std::chrono::seconds(10),
                     std::chrono::milliseconds(1)));
  cluster.command(source, {"MIGRATE", "127.0.0.1", std::to_string(cluster.port(target)), "", "0", "5000", "KEYS", b});
  cluster.command(target, {"CLUSTER", "SETSLOT", slot, "NODE", cluster.id(target)});
  cluster.command(source, {"CLUSTER", "SETSLOT", slot, "NODE", cluster.id(target)});
  cluster.command(0, {"CLUSTER", "SETSLOT", slot, "NODE", cluster.id(target)});
  REQUIRE(joined.get().str == "12");
  REQUIRE(client.command({"GET", b}).get().str == "2");
  REQUIRE(cluster.owner(std::stoi(slot), target) == target);
}

TEST_CASE("a SharedMemory is read, written and watched while its slot migrates to another node", "[redis][cluster]") {
  scale::Runtime runtime;
  auto& cluster = RedisCluster::shared();
  const auto name = namespace_off(0);
  const std::string tag = "{scale:" + name + "}";
  const auto slot = std::to_string(cluster.keyslot(tag));
  const auto source = cluster.owner(std::stoi(slot));
  const auto target = source == 1 ? std::size_t{2} : std::size_t{1};
  scale::SharedMemory memory(cluster.url(0) + "?namespace=" + name);
  memory.set("k", 1).get();
  // A watch whose reader blocks on the stream while the stream moves.
  auto changes = std::make_shared<memory_suite::Recorder>();
  auto watch = memory.watch("", memory_suite::into(changes));
  watch.ready().get();

  // A reader that never stops reading while the slot moves: every read must answer.
  std::atomic<bool> reading{true};
  std::atomic<int> reads{0};
  std::atomic<int> wrong{0};
  std::string failure;
  std::thread reader([&] {
    try {
      int last = 1;
      while (reading.load()) {
        const int value = memory.get<int>("k").get();
        if (value < last) ++wrong;
        last = value;
        ++reads;
      }
    } catch (const std::exception& error) {
      failure = error.what();
      ++wrong;
    }
  });
  auto read_more = [&] {
    const int seen = reads.load();
    return eventually([&] { return reads.load() >= seen + 3 || wrong.load() > 0; }, std::chrono::seconds(10),
                      std::chrono::milliseconds(1));
  };

  const auto target_port = std::to_string(cluster.port(target));
  REQUIRE(read_more());
  cluster.command(target, {"CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.id(source)});
  cluster.command(source, {"CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.id(target)});
  cluster.command(source, {"MIGRATE", "127.0.0.1", target_port, "", "0", "5000", "KEYS", tag + ":data"});
  REQUIRE(read_more());               // the hash is on the target: reads follow ASK
  auto written = memory.set("k", 2);  // its script needs every key of the tag on one node: TRYAGAIN
  cluster.command(source,
                  {"MIGRATE", "127.0.0.1", target_port, "", "0", "5000", "KEYS", tag + ":revision", tag + ":changes"});
  for (std::size_t node : {target, source, std::size_t{0}})
    cluster.command(node, {"CLUSTER", "SETSLOT", slot, "NODE", cluster.id(target)});
  REQUIRE(written.get() == 2);
  REQUIRE(eventually([&] { return memory.get<int>("k").get() == 2; }));
  REQUIRE(changes->wait_for(1));
  REQUIRE(changes->items().front().revision == 2);
  REQUIRE(changes->items().front().value == 2);
  REQUIRE(read_more());  // and now MOVED to the target
  reading = false;
  reader.join();
  INFO(failure);
  REQUIRE(wrong.load() == 0);
  REQUIRE(cluster.text(target, {"EXISTS", tag + ":data"}) == "1");
}

TEST_CASE("a command whose keys hash to different slots fails with an Error that says to share one tag",
          "[redis][cluster]") {
  scale::Runtime runtime;
  auto& cluster = RedisCluster::shared();
  RedisClient client(parse_redis_url(cluster.url(0)));
  auto check = [&](auto&& run) {
    try {
      run();
      FAIL("the command ran");
    } catch (const scale::ConnectionError& error) {
      FAIL(std::string("a ConnectionError: ") + error.what());
    } catch (const scale::Error& error) {
      const std::string message = error.what();
      REQUIRE(message.find("different hash slots") != std::string::npos);
      REQUIRE(message.find("one hash tag") != std::string::npos);
      REQUIRE(message.find(cluster.url(0)) != std::string::npos);
    }
  };
  check([&] { client.command({"MSET", "{one}x", "1", "{two}y", "2"}).get(); });
  const scale::detail::RedisScript script("return redis.call('GET', KEYS[1])");
  check([&] { client.run(script, {"{one}x", "{two}y"}, {}).get(); });
  // Under one tag the same calls run.
  client.command({"MSET", "{one}x", "1", "{one}y", "2"}).get();
  REQUIRE(client.run(script, {"{one}x", "{one}y"}, {}).get().str == "1");
}

TEST_CASE("a redirection loop fails the command with ConnectionError saying so", "[redis][cluster]") {
  scale::Runtime runtime;
  auto& cluster = RedisCluster::shared();
  // An empty slot of node 0 that node 0 gives to node 1, which still believes it is node 0's.
  std::string key;
  for (int i = 0;; ++i) {
    key = "loop:" + std::to_string(i);
    const auto slot = std::to_string(cluster.keyslot(key));
    if (cluster.owner(std::stoi(slot)) == 0 && cluster.text(0, {"CLUSTER", "COUNTKEYSINSLOT", slot}) == "0") break;
  }
  const auto slot = std::to_string(cluster.keyslot(key));
  cluster.command(0, {"CLUSTER", "SETSLOT", slot, "NODE", cluster.id(1)});
  RedisClient client(parse_redis_url(cluster.url(0)));
  try {
    client.command({"GET", key}).get();
    FAIL("the command was answered");
  } catch (const scale::ConnectionError& error) {
    const std::string message = error.what();
    REQUIRE(message.find("more than 5 times") != std::string::npos);
    REQUIRE(message.find("slot " + slot) != std::string::npos);
  }
  cluster.command(0, {"CLUSTER", "SETSLOT", slot, "NODE", cluster.id(0)});
  REQUIRE(client.command({"GET", key}).get().is_nil());
}

TEST_CASE("a redis:// URL with a database other than 0 fails against a cluster with an Error naming it",
          "[redis][cluster]") {
  scale::Runtime runtime;
  const std::string url = RedisCluster::shared().url(0) + "/2";
  scale::SharedMemory memory(url + "?namespace=" + namespace_off(0));
  try {
    memory.set("k", 1).get();
    FAIL("the write ran");
  } catch (const scale::ConnectionError& error) {
    FAIL(std::string("a ConnectionError: ") + error.what());
  } catch (const scale::Error& error) {
    const std::string message = error.what();
    REQUIRE(message.find(url) != std::string::npos);
    REQUIRE(message.find("only database 0") != std::string::npos);
  }
}

TEST_CASE("events emitted through one node reach subscribers on the others", "[redis][cluster]") {
  scale::Runtime runtime;
  auto& cluster = RedisCluster::shared();
  const std::string query = "?namespace=" + support::RedisServer::fresh_namespace();
  scale::SharedEventEmitter emitter(cluster.url(1) + query);
  scale::SharedEventEmitter on_0(cluster.url(0) + query);
  scale::SharedEventEmitter on_2(cluster.url(2) + query);
  auto seen_0 = std::make_shared<events_suite::Recorder>();
  auto seen_2 = std::make_shared<events_suite::Recorder>();
  auto subscription_0 = on_0.on("e", events_suite::into(seen_0));
  auto subscription_2 = on_2.on("e", events_suite::into(seen_2));
  subscription_0.ready().get();
  subscription_2.ready().get();
  for (int i = 0; i < 10; ++i) emitter.emit("e", i).get();
  REQUIRE(seen_0->wait_for(10));
  REQUIRE(seen_2->wait_for(10));
  REQUIRE(seen_0->items() == seen_2->items());
  REQUIRE(seen_2->items().back() == 9);
}
