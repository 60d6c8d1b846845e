// ClusterManager::desired_workers(): the worker count a manager's backlog asks for, in Redis and
// through ClusterOptions::on_demand. Workers are this very test executable started with
// --scale-worker URL on a redis-server the tests start; main() builds the Runtime from argc/argv
// first (in a worker it serves and never returns). Each test case uses its own namespace on the
// shared server and kills its workers by pid.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/detail/loop.hpp>
#include <scale/scale.hpp>

#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback.hpp"
#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/worker_process.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using namespace support;

/// fast_options() with `scaling`; a chunk waits up to 20 s for a worker.
scale::ClusterOptions fast_options(scale::ScalingPolicy scaling) {
  scale::ClusterOptions options = support::fast_options();
  options.wait_for_workers = 20s;
  options.scaling = scaling;
  return options;
}

/// The hash of desired counts of the namespace's one build: field → value.
std::map<std::string, std::string> desired_hash(const std::string& url) {
  std::map<std::string, std::string> fields;
  auto keys = redis(url, {"KEYS", tag_of(url) + ":desired:*"});
  if (keys.elements.empty()) return fields;
  auto reply = redis(url, {"HGETALL", keys.elements[0].str});
  for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2)
    fields[reply.elements[i].str] = reply.elements[i + 1].str;
  return fields;
}

/// The ids of the namespace's managers, from their registry.
std::set<std::string> manager_ids(const std::string& url) {
  std::set<std::string> ids;
  for (auto& id : redis(url, {"HKEYS", tag_of(url) + ":managers"}).elements) ids.insert(id.str);
  return ids;
}

auto slow_twice = [](int x) {
  std::this_thread::sleep_for(20ms);
  return 2 * x;
};

auto quick_twice = [](int x) {
  std::this_thread::sleep_for(2ms);
  return 2 * x;
};

/// What on_demand saw: each count, whether it came on the loop thread, and when.
struct DemandLog {
  struct Call {
    std::size_t count;
    bool on_loop;
    Clock::time_point at;
  };
  std::mutex mutex;
  std::vector<Call> calls;

  std::function<void(std::size_t)> callback() {
    return [this](std::size_t count) {
      std::lock_guard lock(mutex);
      calls.push_back({count, scale::detail::on_loop_thread(), Clock::now()});
    };
  }
  std::vector<Call> snapshot() {
    std::lock_guard lock(mutex);
    return calls;
  }
};

/// Every command the shared server runs, as MONITOR prints them, read on a thread of its own.
class Monitor {
 public:
  Monitor() : m_fd(support::connect_loopback(static_cast<std::uint16_t>(support::RedisServer::shared().port()))) {
    const std::string command = "MONITOR\r\n";
    if (::send(m_fd, command.data(), command.size(), 0) != static_cast<ssize_t>(command.size()))
      throw std::runtime_error("MONITOR could not be sent");
    m_reader = std::thread([this] {
      char buffer[4096];
      while (true) {
        const ssize_t n = ::recv(m_fd, buffer, sizeof buffer, 0);
        if (n == 0 || (n < 0 && m_stop.load())) return;
        if (n < 0) continue;  // the read timed out
        std::lock_guard lock(m_mutex);
        m_text.append(buffer, static_cast<std::size_t>(n));
      }
    });
    // MONITOR answers +OK before it passes on any command.
    if (!eventually([&] { return text().starts_with("+OK"); }, 5s)) throw std::runtime_error("MONITOR did not start");
  }
  ~Monitor() {
    m_stop = true;
    ::shutdown(m_fd, SHUT_RDWR);
    m_reader.join();
    ::close(m_fd);
  }

  std::string text() {
    std::lock_guard lock(m_mutex);
    return m_text;
  }

  /// How many commands seen so far contain `needle` (MONITOR prints one command a line).
  std::size_t count(const std::string& needle) {
    const std::string all = text();
    std::size_t n = 0;
    for (auto at = all.find(needle); at != std::string::npos; at = all.find(needle, at + needle.size())) ++n;
    return n;
  }

 private:
  int m_fd;
  std::atomic<bool> m_stop{false};
  std::mutex m_mutex;
  std::string m_text;
  std::thread m_reader;
};

}  // namespace

TEST_CASE("desired_workers() rises with a map's backlog before any worker joins, and is in Redis under the "
          "manager's id",
          "[cluster][demand]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  scale::ClusterManager manager(url, fast_options({.min = 1, .scale_down_after = 10s}));

  // At once: the policy's min, written under this manager's id, in a hash that expires unless renewed.
  CHECK(manager.desired_workers() == 1);
  CHECK(manager.stats().workers_target == 1);
  REQUIRE(eventually([&] { return manager_ids(url).size() == 1 && desired_hash(url).size() == 1; }));
  const std::string id = *manager_ids(url).begin();
  CHECK(desired_hash(url) == std::map<std::string, std::string>{{id, "1"}});
  const auto ttl = redis(url, {"PTTL", redis(url, {"KEYS", tag_of(url) + ":desired:*"}).elements[0].str}).integer;
  CHECK(ttl > 0);
  CHECK(ttl <= 60'000);

  scale::Iterator<int> numbers(iota(64), manager);
  auto pending = numbers.map(slow_twice);
  // No worker: nothing finishes, so the backlog holds still; two chunks of it per worker.
  REQUIRE(eventually([&] {
    const std::size_t backlog = manager.backlog();
    return backlog > 2 && manager.desired_workers() == (backlog + 1) / 2;
  }));
  const std::size_t wanted = manager.desired_workers();
  CHECK(manager.stats().workers_target == wanted);
  REQUIRE(eventually([&] {
    return desired_hash(url) == std::map<std::string, std::string>{{id, std::to_string(wanted)}};
  }));

  // A worker joins and runs the whole map.
  WorkerProcess worker(url);
  std::vector<int> result = std::move(pending).get();
  REQUIRE(result.size() == 64);
  for (std::size_t i = 0; i < result.size(); ++i) REQUIRE(result[i] == static_cast<int>(2 * i));
}

TEST_CASE("on_demand gets each new count on the loop thread, and the count falls back to min only after "
          "scale_down_after once the work is done",
          "[cluster][demand]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess worker(url);
  DemandLog log;
  constexpr auto window = 400ms;
  scale::ClusterOptions options = fast_options(
      {.min = 0, .max = 6, .backlog_per_worker = 1, .scale_down_after = window});
  options.on_demand = log.callback();
  scale::ClusterManager manager(url, options);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  CHECK(manager.desired_workers() == 0);

  std::atomic<std::int64_t> finished_at{0};  // when the last item's result arrived (the loop's clock)
  scale::RunOptions run{.progress = [&](std::size_t done, std::size_t total) {
    if (done == total) finished_at = Clock::now().time_since_epoch().count();
  }};
  scale::Iterator<int> numbers(iota(30), manager);
  std::vector<int> result = numbers.map(slow_twice, run).get();
  for (std::size_t i = 0; i < result.size(); ++i) REQUIRE(result[i] == static_cast<int>(2 * i));

  REQUIRE(eventually([&] { return manager.desired_workers() == 0; }, 5s));
  REQUIRE(eventually([&] {
    auto calls = log.snapshot();
    return !calls.empty() && calls.back().count == 0;
  }));
  const auto calls = log.snapshot();
  std::size_t previous = 0;  // the count before the first call: min
  std::size_t peak = 0;
  for (const auto& call : calls) {
    CHECK(call.on_loop);
    CHECK(call.count != previous);  // called only when the count changes
    previous = call.count;
    peak = std::max(peak, call.count);
  }
  CHECK(peak == 6);  // 30 items of backlog, capped by max
  // Down to min only once the whole window held with nothing left.
  const Clock::time_point done{Clock::duration(finished_at.load())};
  CHECK(calls.back().at - done >= window);
  CHECK(manager.stats().workers_target == 0);
  REQUIRE(eventually([&] { return desired_hash(url).begin()->second == "0"; }));
}

TEST_CASE("two managers of one build each write their own field, and a destroyed manager's field is gone",
          "[cluster][demand]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  auto a = std::make_unique<scale::ClusterManager>(url, fast_options({.max = 3}));
  auto b = std::make_unique<scale::ClusterManager>(url, fast_options({.max = 5}));
  scale::Iterator<int> on_a(iota(40), *a), on_b(iota(40), *b);
  auto pending_a = on_a.map(slow_twice);
  auto pending_b = on_b.map(slow_twice);

  // No worker: both backlogs ask for more than their max.
  REQUIRE(eventually([&] { return a->desired_workers() == 3 && b->desired_workers() == 5; }));
  std::map<std::string, std::string> fields;
  REQUIRE(eventually([&] {
    fields = desired_hash(url);
    std::multiset<std::string> values;
    for (auto& [field, value] : fields) values.insert(value);
    return values == std::multiset<std::string>{"3", "5"};
  }));
  std::set<std::string> ids;
  for (auto& [field, value] : fields) ids.insert(field);
  CHECK(ids == manager_ids(url));  // one field per manager, named by its id

  // The destructor has removed the field by the time it returns.
  a.reset();
  REQUIRE_THROWS_AS(std::move(pending_a).get(), scale::Stopped);
  fields = desired_hash(url);
  REQUIRE(fields.size() == 1);
  CHECK(fields.begin()->second == "5");
  CHECK(manager_ids(url).count(fields.begin()->first) == 1);

  b.reset();
  REQUIRE_THROWS_AS(std::move(pending_b).get(), scale::Stopped);
  CHECK(redis(url, {"KEYS", tag_of(url) + ":desired:*"}).elements.empty());
}

TEST_CASE("the hash sits under the URL's ?namespace= tag, named by the build's fingerprint", "[cluster][demand]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  const std::string tag = tag_of(url);
  scale::ClusterManager manager(url, fast_options({.min = 2, .max = 4}));
  REQUIRE(eventually([&] { return redis(url, {"KEYS", tag + ":desired:*"}).elements.size() == 1; }));
  // The build's task streams are <tag>:tasks:<fingerprint>:<class>:<manager>.
  auto tasks = redis(url, {"KEYS", tag + ":tasks:*"});
  REQUIRE(tasks.elements.size() == 1);
  const std::string after_tasks = tasks.elements[0].str.substr((tag + ":tasks:").size());
  const std::string fingerprint = after_tasks.substr(0, after_tasks.find(':'));
  CHECK(redis(url, {"HGET", tag + ":desired:" + fingerprint, *manager_ids(url).begin()}).str == "2");
  CHECK(redis(url, {"KEYS", "{scale}:desired:*"}).elements.empty());
}

TEST_CASE("a changing count reaches Redis at most every 250 ms, and its last value always does", "[cluster][demand]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  const std::string hset = "\"HSET\" \"" + tag_of(url) + ":desired:";
  WorkerProcess worker(url);
  Monitor monitor;
  DemandLog log;
  // A 1 ms window and one item per chunk: the count follows the backlog down chunk by chunk.
  scale::ClusterOptions options = fast_options({.backlog_per_worker = 1, .scale_down_after = 1ms});
  options.on_demand = log.callback();
  const auto started = Clock::now();
  scale::ClusterManager manager(url, options);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  scale::Iterator<int> numbers(iota(150), manager);
  std::vector<int> result = numbers.map(quick_twice, {.chunk_size = 1}).get();
  REQUIRE(result.size() == 150);
  REQUIRE(eventually([&] { return manager.desired_workers() == 0; }, 5s));
  REQUIRE(eventually([&] { return desired_hash(url).begin()->second == "0"; }, 5s));
  const auto elapsed = Clock::now() - started;

  const std::size_t changes = log.snapshot().size();
  const std::size_t writes = monitor.count(hset);
  INFO("on_demand calls: " << changes << ", HSETs: " << writes << " in "
                           << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms");
  CHECK(changes >= 20);  // the count changed often...
  // ...but Redis heard of it at most once per 250 ms, plus the first write and the renewals (every
  // ten heartbeat intervals, here 1 s).
  CHECK(writes <= 2 + static_cast<std::size_t>(elapsed / 250ms) + static_cast<std::size_t>(elapsed / 1s));
  CHECK(writes < changes);
}

TEST_CASE("a live manager removes the field of a manager whose result stream has expired, and keeps a live one's",
          "[cluster][demand]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  const std::string tag = tag_of(url);
  scale::ClusterManager manager(url, fast_options({.min = 1}));
  REQUIRE(eventually([&] { return desired_hash(url).size() == 1; }));
  const std::string id = desired_hash(url).begin()->first;
  const std::string key = redis(url, {"KEYS", tag + ":desired:*"}).elements[0].str;
  // A manager killed with kill -9: its field stays, its result stream has expired. Another one,
  // alive, whose result stream is there.
  redis(url, {"HSET", key, "killed-manager", "7", "other-live-manager", "3"});
  redis(url, {"XADD", tag + ":results:other-live-manager", "*", "a", "0"});
  // The renewal comes every ten heartbeat intervals (1 s here).
  REQUIRE(eventually([&] { return desired_hash(url).count("killed-manager") == 0; }, 5s));
  CHECK(desired_hash(url) == std::map<std::string, std::string>{{id, "1"}, {"other-live-manager", "3"}});
  redis(url, {"DEL", tag + ":results:other-live-manager"});
}

TEST_CASE("a ScalingPolicy that validate() refuses makes the constructor throw std::invalid_argument naming the field",
          "[cluster][demand][errors]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  REQUIRE_THROWS_AS(scale::ClusterManager(url, fast_options({.min = 5, .max = 2})), std::invalid_argument);
  REQUIRE_THROWS_WITH(scale::ClusterManager(url, fast_options({.min = 5, .max = 2})), Catch::Contains("min"));
  REQUIRE_THROWS_WITH(scale::ClusterManager(url, fast_options({.backlog_per_worker = 0})),
                      Catch::Contains("backlog_per_worker"));
  REQUIRE_THROWS_WITH(scale::ClusterManager(url, fast_options({.min = 0, .max = 3, .scale_down_after = 0ms})),
                      Catch::Contains("scale_down_after"));
  // Refused before the manager touched Redis.
  CHECK(redis(url, {"KEYS", tag_of(url) + ":*"}).elements.empty());
}

int main(int argc, char** argv) {
  // In a worker this serves and never returns. In the parent the Runtime goes away again: each
  // test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
