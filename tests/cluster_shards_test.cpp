// ClusterManager shards (?shards=N in the URL): a manager's task streams spread over N hash tags
// {<namespace>#s<i>}, so a Redis Cluster can hold them on N nodes. The option's parsing and its
// bad values (the manager's Error, a worker's exit 2 with a usage line), the layout on one
// redis-server (one shard keeps the single tag; N shards each carry chunks of one map), a worker
// whose URL says another count (it follows the manager's, and says so), and a real Redis Cluster
// of three masters started by the test, on which every master holds task streams and carries
// chunks of a map over real workers. Workers are this very test executable started with
// --scale-worker URL; main() builds the Runtime from argc/argv first, so in a worker it serves and
// never returns. Each test case uses its own namespace and kills its workers by pid.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/redis_cluster.hpp"
#include "support/worker_process.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;
using namespace support;

auto twice = [](int x) { return 2 * x; };

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// A log file of this test process's own for a worker's stderr.
std::string log_path(const std::string& what) {
  return "/tmp/scale-shards-" + what + "-" + std::to_string(::getpid());
}

/// The namespace of a fresh_url().
std::string namespace_of(const std::string& url) { return url.substr(url.find("namespace=") + 10); }

/// Shard `i`'s tag of namespace `ns`, as docs/routing.md gives it.
std::string shard_tag(const std::string& ns, std::size_t i) { return "{scale:" + ns + "#s" + std::to_string(i) + "}"; }

/// The names of the keys matching `pattern` on the single server.
std::set<std::string> keys_matching(const std::string& url, const std::string& pattern) {
  std::set<std::string> names;
  for (auto& key : redis(url, {"KEYS", pattern}).elements) names.insert(key.str);
  return names;
}

/// A stream's entries-added (XINFO STREAM): every entry it was ever given, deleted ones included.
std::int64_t entries_added(const scale::detail::RedisReply& info) {
  for (std::size_t i = 0; i + 1 < info.elements.size(); i += 2)
    if (info.elements[i].str == "entries-added") return info.elements[i + 1].integer;
  return -1;
}

scale::RunOptions one_per_chunk() {
  scale::RunOptions options;
  options.chunk_size = 1;
  return options;
}

void check_doubled(const std::vector<int>& result, int items) {
  REQUIRE(result.size() == static_cast<std::size_t>(items));
  for (int i = 0; i < items; ++i) REQUIRE(result[static_cast<std::size_t>(i)] == 2 * i);
}

void wait_for_workers(const scale::ClusterManager& manager, std::size_t count) {
  REQUIRE(eventually([&] { return manager.stats().workers_alive >= count; }, 20s));
}

}  // namespace

TEST_CASE("a ?shards= of 0, over 1024 or not a number fails the ClusterManager with an Error naming the URL",
          "[cluster][shards][errors]") {
  scale::Runtime runtime;
  for (const std::string value : {"0", "1025", "99999", "", "three", "3x", "-1", "+2", " 2"}) {
    const std::string url = fresh_url() + "&shards=" + value;
    CAPTURE(url);
    try {
      scale::ClusterManager manager(url, fast_options());
      FAIL("the ClusterManager took ?shards=" + value);
    } catch (const scale::Error& error) {
      CHECK_THAT(error.what(), Catch::Contains("scale::ClusterManager(\"" + url + "\")") &&
                                   Catch::Contains("?shards=" + value + " is not a whole number from 1 to 1024"));
    }
  }
  // The bounds themselves are taken, alone and after a namespace.
  CHECK_NOTHROW(scale::ClusterManager(RedisServer::shared().url() + "?shards=1024&namespace=" +
                                          RedisServer::fresh_namespace(),
                                      fast_options()));
  CHECK_NOTHROW(scale::ClusterManager(fresh_url() + "&shards=1", fast_options()));
  // A namespace with '#' could be another's shard tag, so it is refused too.
  CHECK_THROWS_AS(scale::ClusterManager(RedisServer::shared().url() + "?namespace=a#s0", fast_options()),
                  scale::Error);
}

TEST_CASE("a worker whose URL has a bad ?shards= exits 2 with a usage line naming the URL",
          "[cluster][shards][errors]") {
  scale::Runtime runtime;
  int n = 0;
  for (const std::string value : {"0", "2000", "many"}) {
    const std::string url = fresh_url() + "&shards=" + value;
    const std::string log = log_path("bad-" + std::to_string(n++));
    WorkerProcess worker(url, {.stderr_file = log});
    CHECK(worker.wait_exit(10s) == 2);
    const std::string text = read_file(log);
    ::unlink(log.c_str());
    CHECK_THAT(text, Catch::Contains("--scale-worker(\"" + url + "\")") && Catch::Contains("?shards=" + value) &&
                         Catch::Contains("usage:"));
    CHECK(redis(url, {"HLEN", tag_of(url) + ":workers"}).integer == 0);  // it never joined
  }
}

TEST_CASE("one shard keeps the task streams under the namespace's tag: N shards put them under N shard tags",
          "[cluster][shards]") {
  scale::Runtime runtime;
  SECTION("?shards=1 and no ?shards= at all: the one tag, and a directory field without shards") {
    for (const std::string suffix : {"", "&shards=1"}) {
      const std::string url = fresh_url() + suffix;
      const std::string tag = tag_of(url.substr(0, url.find('&')));
      scale::ClusterManager manager(url, fast_options());
      REQUIRE(eventually([&] { return keys_matching(url, tag + ":tasks:*").size() == 1; }));
      CHECK(keys_matching(url, "{scale:" + namespace_of(url.substr(0, url.find('&'))) + "#*").empty());
      const auto fields = redis(url, {"HVALS", *keys_matching(url, tag + ":classes:*").begin()});
      REQUIRE(fields.elements.size() == 1);
      CHECK_THAT(fields.elements[0].str, !Catch::Contains("shards"));
    }
  }
  SECTION("?shards=4: one stream per shard tag, none under the main tag, and N in the directory") {
    const std::string base = fresh_url();
    const std::string ns = namespace_of(base);
    const std::string url = base + "&shards=4";
    scale::ClusterManager manager(url, fast_options());
    for (std::size_t i = 0; i < 4; ++i)
      REQUIRE(eventually([&] { return keys_matching(url, shard_tag(ns, i) + ":tasks:*").size() == 1; }));
    CHECK(keys_matching(url, shard_tag(ns, 4) + ":*").empty());
    CHECK(keys_matching(url, tag_of(base) + ":tasks:*").empty());
    // What stays on the main tag: the directory (which says 4) and the manager's results stream.
    const auto fields = redis(url, {"HVALS", *keys_matching(url, tag_of(base) + ":classes:*").begin()});
    REQUIRE(fields.elements.size() == 1);
    CHECK_THAT(fields.elements[0].str, Catch::Contains("\"shards\":4"));
    CHECK(keys_matching(url, tag_of(base) + ":results:*").size() == 1);
  }
}

TEST_CASE("a map on a manager with four shards on one redis-server completes, and every shard carries its chunks",
          "[cluster][shards]") {
  scale::Runtime runtime;
  const std::string base = fresh_url();
  const std::string ns = namespace_of(base);
  const std::string url = base + "&shards=4";
  WorkerProcess a(url), b(url, {.extra = {"--scale-threads", "2"}});
  scale::ClusterManager manager(url, fast_options());
  wait_for_workers(manager, 2);
  constexpr int items = 200;
  scale::Iterator<int> numbers(iota(items), manager);
  check_doubled(numbers.map(twice, one_per_chunk()).get(), items);
  // The manager handed its chunks to the four streams in turn: each got a quarter of them (more
  // only if one ran again).
  std::int64_t total = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    const auto streams = keys_matching(url, shard_tag(ns, i) + ":tasks:*");
    REQUIRE(streams.size() == 1);
    const std::int64_t added = entries_added(redis(url, {"XINFO", "STREAM", *streams.begin()}));
    CAPTURE(i, added);
    CHECK(added >= items / 4);
    total += added;
  }
  CHECK(total >= items);
  // Nothing is left queued or pending on any shard.
  for (std::size_t i = 0; i < 4; ++i)
    for (const auto& stream : keys_matching(url, shard_tag(ns, i) + ":tasks:*")) {
      CHECK(redis(url, {"XLEN", stream}).integer == 0);
      CHECK(redis(url, {"XPENDING", stream, "workers"}).elements.at(0).integer == 0);
    }
}

TEST_CASE("a worker whose URL names no ?shards= or another count follows its manager's and says so once",
          "[cluster][shards]") {
  scale::Runtime runtime;
  const std::string base = fresh_url();
  const std::string url = base + "&shards=3";
  const std::string log_none = log_path("none"), log_two = log_path("two");
  WorkerProcess plain(base, {.stderr_file = log_none});
  WorkerProcess two(base + "&shards=2", {.stderr_file = log_two});
  scale::ClusterManager manager(url, fast_options());
  wait_for_workers(manager, 2);
  constexpr int items = 60;
  scale::Iterator<int> numbers(iota(items), manager);
  check_doubled(numbers.map(twice, one_per_chunk()).get(), items);
  check_doubled(numbers.map(twice, one_per_chunk()).get(), items);
  for (const auto& [log, says] : std::map<std::string, std::string>{{log_none, "this worker's URL says 1"},
                                                                    {log_two, "this worker's URL says 2"}}) {
    const std::string text = read_file(log);
    ::unlink(log.c_str());
    CAPTURE(text);
    CHECK_THAT(text, Catch::Contains("over 3 shard(s) (?shards=3)") && Catch::Contains(says));
    // Once per manager, not at every heartbeat.
    CHECK(text.find("?shards=3") == text.rfind("?shards=3"));
  }
}

TEST_CASE("on a Redis Cluster of three masters, every master holds task streams and a map over workers completes",
          "[cluster][shards][redis_cluster]") {
  auto& cluster = RedisCluster::shared();
  scale::Runtime runtime;
  const std::string ns = RedisServer::fresh_namespace();
  // The fewest shards from 3 on whose tags lie on all three masters (the test reads where each
  // tag's slot is, so it holds whatever slots the cluster gave each node).
  std::size_t shards = 3;
  for (;; ++shards) {
    REQUIRE(shards <= 64);
    std::set<std::size_t> masters;
    for (std::size_t i = 0; i < shards; ++i) masters.insert(cluster.owner(cluster.keyslot(shard_tag(ns, i))));
    if (masters.size() == RedisCluster::size) break;
  }
  CAPTURE(shards);
  const std::string url = cluster.url(0) + "?namespace=" + ns + "&shards=" + std::to_string(shards);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(std::make_unique<WorkerProcess>(url));
  scale::ClusterManager manager(url, fast_options());
  wait_for_workers(manager, 3);
  constexpr int items = 150;
  scale::Iterator<int> numbers(iota(items), manager);
  check_doubled(numbers.map(twice, one_per_chunk()).get(), items);

  // Each master's own KEYS: its task streams, and the chunks they were given.
  std::int64_t total = 0;
  for (std::size_t node = 0; node < RedisCluster::size; ++node) {
    auto keys = cluster.command(node, {"KEYS", "{scale:" + ns + "#s*}:tasks:*"});
    CAPTURE(node);
    CHECK(keys->elements >= 1);
    std::int64_t added = 0;
    for (std::size_t k = 0; k < keys->elements; ++k) {
      const std::string key(keys->element[k]->str, keys->element[k]->len);
      auto info = cluster.command(node, {"XINFO", "STREAM", key});
      for (std::size_t f = 0; f + 1 < info->elements; f += 2)
        if (std::string(info->element[f]->str, info->element[f]->len) == "entries-added")
          added += info->element[f + 1]->integer;
    }
    CHECK(added >= 1);
    total += added;
  }
  CHECK(total >= items);
  // The main tag's keys (the workers' records, the directory) stay on one node, the tag's.
  const std::size_t home = cluster.owner(cluster.keyslot("{scale:" + ns + "}"));
  CHECK(cluster.command(home, {"HLEN", "{scale:" + ns + "}:workers"})->integer == 3);
}

int main(int argc, char** argv) {
  // In a worker this serves and never returns. In the parent the Runtime goes away again: each
  // test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
