// ScalabilityManager::report_to on every tier: the snapshot under _scale/managers/<name> and the
// events on _scale/managers (kind, stats, workers, calls), their cadence (at most every 250 ms, at
// least every 2 s), a running call's progress up to its final "done" with fraction 1, the erase and
// the "ended" event when the manager goes (destroyed off the loop and on it), bad names, and drain
// orders (a ClusterManager drains a real worker process; the others answer with an error event).
// Each case runs against an in-process SharedMemory + SharedEventEmitter and against a real store
// server on a loopback port (support/http_store.hpp). Workers are this very executable: main()
// builds the Runtime from argc/argv first, so in a worker it serves and never returns.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/http_store.hpp"
#include "support/iota.hpp"
#include "support/worker_process.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using support::eventually;

/// Sleeps 50 ms: 40 of them run about a second on two workers, so the report sees the call run.
auto slow_square = [](int x) {
  std::this_thread::sleep_for(50ms);
  return x * x;
};

/// What arrived on _scale/managers, with when it arrived. Handlers run on the loop: they record
/// here and the test thread waits.
class Events {
 public:
  void add(const json& payload) {
    {
      std::lock_guard lock(m_mutex);
      m_items.push_back({payload, Clock::now()});
    }
    m_cv.notify_all();
  }
  /// Waits (up to `limit`) for a payload that `match` accepts; returns it.
  std::optional<json> wait_for(const std::function<bool(const json&)>& match, std::chrono::milliseconds limit = 10s) {
    std::unique_lock lock(m_mutex);
    std::optional<json> found;
    m_cv.wait_for(lock, limit, [&] {
      for (const auto& item : m_items)
        if (match(item.payload)) {
          found = item.payload;
          return true;
        }
      return false;
    });
    return found;
  }
  struct Item {
    json payload;
    Clock::time_point at;
  };
  std::vector<Item> items() {
    std::lock_guard lock(m_mutex);
    return m_items;
  }

 private:
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::vector<Item> m_items;
};

/// Where a manager reports: an in-process memory with its emitter, or a store server (whose
/// events go through an emitter the report makes from memory.url()).
struct Target {
  explicit Target(bool store)
      : url(store ? support::fresh_store_url() : std::string()),
        memory(store ? scale::SharedMemory(url) : scale::SharedMemory()),
        events(store ? scale::SharedEventEmitter(url) : scale::SharedEventEmitter()) {
    subscription = events.on("_scale/managers", [seen = seen](const json& payload) { seen->add(payload); });
    subscription.ready().get();
  }
  /// The emitter to pass to report_to: ours for an in-process memory, none for the store.
  scale::SharedEventEmitter* emitter() { return url.empty() ? &events : nullptr; }
  void report(scale::ScalabilityManager& manager, const std::string& name) {
    manager.report_to(memory, name, emitter());
  }
  std::optional<json> snapshot(const std::string& name) {
    auto entry = memory.entry("_scale/managers/" + name).get();
    if (!entry) return std::nullopt;
    return entry->value;
  }

  std::string url;
  scale::SharedMemory memory;
  scale::SharedEventEmitter events;
  std::shared_ptr<Events> seen = std::make_shared<Events>();
  scale::Subscription subscription;
};

std::function<bool(const json&)> beat_of(const std::string& name) {
  return [name](const json& payload) { return payload.value("name", "") == name && payload.contains("kind"); };
}

/// The manager of one tier, made for a test.
std::unique_ptr<scale::ScalabilityManager> make_manager(const std::string& kind) {
  if (kind == "inline") return std::make_unique<scale::InlineManager>();
  if (kind == "thread_pool") return std::make_unique<scale::ThreadPoolManager>(2);
  return std::make_unique<scale::ProcessPoolManager>(scale::ProcessPoolOptions{.max_workers = 2, .min_workers = 1});
}

std::size_t workers_of(const std::string& kind) { return kind == "thread_pool" ? 2 : 1; }

void check_stats(const json& stats) {
  for (const char* field : {"workers_alive", "workers_spawned", "workers_lost", "tasks_queued", "tasks_running",
                            "tasks_done", "tasks_failed", "tasks_retried", "setups_failed", "workers_refused",
                            "workers_target"}) {
    INFO(field);
    CHECK(stats.contains(field));
    CHECK(stats[field].is_number_unsigned());
  }
}

}  // namespace

TEST_CASE("a reporting manager of every tier publishes its kind, stats and workers in its snapshot and events",
          "[report]") {
  scale::Runtime runtime;
  const std::string kind = GENERATE("inline", "thread_pool", "process_pool");
  const bool store = GENERATE(false, true);
  INFO(kind << (store ? " on a store server" : " in process"));
  Target target(store);
  auto manager = make_manager(kind);
  const std::string name = "tier." + kind;
  target.report(*manager, name);

  // The snapshot: the whole payload, with the workers once they are up (a process pool's child).
  std::optional<json> snapshot;
  REQUIRE(eventually([&] {
    snapshot = target.snapshot(name);
    return snapshot && (*snapshot)["workers"].size() == workers_of(kind);
  }));
  CHECK((*snapshot)["name"] == name);
  CHECK((*snapshot)["kind"] == kind);
  CHECK((*snapshot)["pid"] == static_cast<int>(::getpid()));
  CHECK(!(*snapshot)["host"].get<std::string>().empty());
  CHECK((*snapshot)["seq"].get<std::uint64_t>() >= 1);
  CHECK((*snapshot)["time_ms"].get<std::int64_t>() > 0);
  CHECK((*snapshot)["orders"] == false);
  CHECK((*snapshot)["calls"].empty());
  check_stats((*snapshot)["stats"]);
  for (const auto& worker : (*snapshot)["workers"]) {
    CHECK(worker["host"] == (*snapshot)["host"]);
    CHECK(worker["site"] == "");
    CHECK(worker["concurrency"] == 1);
    CHECK(worker["heartbeat_age_ms"].is_null());
    CHECK(worker["draining"] == false);
  }
  if (kind == "inline") CHECK((*snapshot)["workers"][0]["id"] == "inline");
  if (kind == "thread_pool") {
    CHECK((*snapshot)["workers"][0]["id"] == "thread-0");
    CHECK((*snapshot)["workers"][1]["id"] == "thread-1");
  }
  if (kind == "process_pool") {
    auto* pool = dynamic_cast<scale::ProcessPoolManager*>(manager.get());
    const auto pids = pool->worker_pids();
    REQUIRE(pids.size() == 1);
    CHECK((*snapshot)["workers"][0]["id"] == "child-0");
    CHECK((*snapshot)["workers"][0]["pid"] == static_cast<int>(pids[0]));
  }

  // The events carry the same payload.
  auto event = target.seen->wait_for([&](const json& payload) {
    return beat_of(name)(payload) && payload["workers"].size() == workers_of(kind);
  });
  REQUIRE(event);
  CHECK((*event)["kind"] == kind);
  check_stats((*event)["stats"]);
}

TEST_CASE("a running call's progress moves in the reports and the last report shows it done with fraction 1",
          "[report]") {
  scale::Runtime runtime;
  const std::string kind = GENERATE("inline", "thread_pool", "process_pool");
  const bool store = GENERATE(false, true);
  INFO(kind << (store ? " on a store server" : " in process"));
  Target target(store);
  auto manager = make_manager(kind);
  const std::string name = "progress-" + kind;
  target.report(*manager, name);
  REQUIRE(target.seen->wait_for(beat_of(name)));

  scale::Iterator<int> items(support::iota(40), *manager);
  const auto squares = items.map(slow_square, scale::RunOptions{.chunk_size = 1}).get();
  REQUIRE(squares.size() == 40);
  CHECK(squares[5] == 25);

  // The done report of the call.
  auto done = target.seen->wait_for([&](const json& payload) {
    if (!beat_of(name)(payload)) return false;
    for (const auto& call : payload["calls"])
      if (call["state"] == "done") return true;
    return false;
  });
  REQUIRE(done);
  const json final_call = (*done)["calls"][0];
  CHECK(final_call["progress"]["fraction"] == 1.0);
  CHECK(final_call["progress"]["items_done"] == 40);
  CHECK(final_call["progress"]["items_total"] == 40);
  CHECK(final_call["progress"]["eta_ms"] == 0);
  CHECK(final_call["started_ms"].get<std::int64_t>() <= (*done)["time_ms"].get<std::int64_t>());
  const auto id = final_call["id"];

  // Before it: the same call running, its fraction moving and never going back.
  std::vector<double> fractions;
  for (const auto& item : target.seen->items()) {
    if (!beat_of(name)(item.payload)) continue;
    for (const auto& call : item.payload["calls"])
      if (call["id"] == id && call["state"] == "running") fractions.push_back(call["progress"]["fraction"].get<double>());
  }
  REQUIRE(fractions.size() >= 2);
  CHECK(std::is_sorted(fractions.begin(), fractions.end()));
  CHECK(fractions.back() > fractions.front());
  CHECK(fractions.back() < 1.0);

  // The call is shown done once, then leaves the reports.
  REQUIRE(target.seen->wait_for([&](const json& payload) {
    return beat_of(name)(payload) && payload["seq"] > (*done)["seq"] && payload["calls"].empty();
  }));
  std::size_t done_reports = 0;
  for (const auto& item : target.seen->items())
    if (beat_of(name)(item.payload))
      for (const auto& call : item.payload["calls"])
        if (call["id"] == id && call["state"] == "done") ++done_reports;
  CHECK(done_reports == 1);
}

TEST_CASE("reports come at most every 250 ms while a call runs and at least every 2 s while idle, snapshots at most every 2 s",
          "[report]") {
  scale::Runtime runtime;
  const bool store = GENERATE(false, true);
  INFO((store ? "on a store server" : "in process"));
  Target target(store);
  // Every write of the snapshot key, from before the report starts.
  Events snapshots;
  auto watch = target.memory.watch("_scale/managers/cadence", [&snapshots](const scale::Change& change) {
    if (!change.erased) snapshots.add(change.value);
  });
  watch.ready().get();
  scale::ThreadPoolManager pool(2);
  target.report(pool, "cadence");
  REQUIRE(target.seen->wait_for(beat_of("cadence")));
  scale::Iterator<int> items(support::iota(30), pool);
  REQUIRE(items.map(slow_square, scale::RunOptions{.chunk_size = 1}).get().size() == 30);
  // Idle now: after the report that shows no call, only liveness beats; wait for two of them.
  auto idle_beats = [&] {
    std::vector<Events::Item> idle;
    for (auto& item : target.seen->items())
      if (beat_of("cadence")(item.payload) && item.payload["calls"].empty() && item.payload["seq"] > 1)
        idle.push_back(item);
    return idle;
  };
  REQUIRE(eventually([&] { return idle_beats().size() >= 3; }, 8s));

  std::vector<Events::Item> beats;
  for (auto& item : target.seen->items())
    if (beat_of("cadence")(item.payload)) beats.push_back(item);
  REQUIRE(beats.size() >= 5);
  for (std::size_t i = 1; i < beats.size(); ++i) {
    INFO("beat " << i);
    CHECK(beats[i].payload["seq"].get<std::uint64_t>() > beats[i - 1].payload["seq"].get<std::uint64_t>());
    // Sent at least 250 ms apart (time_ms is the sender's clock, in whole ms).
    CHECK(beats[i].payload["time_ms"].get<std::int64_t>() - beats[i - 1].payload["time_ms"].get<std::int64_t>() >= 249);
    // And never more than 2 s apart (plus what a loaded machine adds).
    CHECK(beats[i].at - beats[i - 1].at < 2500ms);
  }
  // While a call ran, a report about every 250 ms (the call's progress moves).
  std::size_t running = 0;
  for (const auto& beat : beats)
    if (!beat.payload["calls"].empty() && beat.payload["calls"][0]["state"] == "running") ++running;
  CHECK(running >= 2);
  // Idle, nothing changes: the beats are the liveness ones, about 1.5 s apart, not every 250 ms.
  const auto idle = idle_beats();
  for (std::size_t i = 2; i < idle.size(); ++i)
    CHECK(idle[i].payload["time_ms"].get<std::int64_t>() - idle[i - 1].payload["time_ms"].get<std::int64_t>() >= 1400);

  // The snapshot: written first at once, then only when something changed and 2 s have passed
  // (the call's end changed the stats, so a second one comes), far fewer than the events.
  REQUIRE(eventually([&] { return snapshots.items().size() >= 2; }, 8s));
  const auto written = snapshots.items();
  CHECK(written.size() < beats.size());
  for (std::size_t i = 1; i < written.size(); ++i) {
    INFO("snapshot " << i);
    // time_ms is the sender's wall clock at each write, in whole ms; the report spaces writes by
    // a steady clock, so allow the two clocks' rounding.
    CHECK(written[i].payload["time_ms"].get<std::int64_t>() - written[i - 1].payload["time_ms"].get<std::int64_t>() >=
          1990);
  }
}

TEST_CASE("a reporting manager destroyed off the loop or on it erases its snapshot and sends one ended event",
          "[report]") {
  scale::Runtime runtime;
  const bool store = GENERATE(false, true);
  const bool on_loop = GENERATE(false, true);
  INFO((store ? "on a store server" : "in process") << (on_loop ? ", destroyed on the loop" : ", destroyed off it"));
  Target target(store);
  auto manager = std::make_unique<scale::ThreadPoolManager>(1);
  target.report(*manager, "going");
  REQUIRE(eventually([&] { return target.snapshot("going").has_value(); }));
  const auto started = Clock::now();
  if (on_loop)
    runtime.run([&] { manager.reset(); });
  else
    manager.reset();
  CHECK(Clock::now() - started < 3s);  // bounded: never a hang
  if (!on_loop) CHECK(!target.snapshot("going").has_value());  // waited for off the loop
  REQUIRE(eventually([&] { return !target.snapshot("going").has_value(); }));
  auto ended = target.seen->wait_for([](const json& payload) { return payload.value("ended", false); });
  REQUIRE(ended);
  CHECK((*ended)["name"] == "going");
  CHECK((*ended)["time_ms"].get<std::int64_t>() > 0);
  // It was the last: nothing of "going" follows it.
  std::this_thread::sleep_for(600ms);
  const auto items = target.seen->items();
  std::size_t after = 0, ends = 0;
  bool past = false;
  for (const auto& item : items) {
    if (item.payload.value("name", "") != "going") continue;
    if (item.payload.value("ended", false)) {
      ++ends;
      past = true;
    } else if (past) {
      ++after;
    }
  }
  CHECK(ends == 1);
  CHECK(after == 0);
}

TEST_CASE("report_to refuses a bad name with std::invalid_argument and a second report with std::logic_error",
          "[report][errors]") {
  scale::Runtime runtime;
  scale::SharedMemory memory;
  scale::SharedEventEmitter events;
  scale::InlineManager manager;
  for (const std::string& name : {std::string(), std::string(129, 'a'), std::string("a/b"), std::string("a b"),
                                 std::string("caf\xc3\xa9"), std::string("x?y")}) {
    INFO(name);
    CHECK_THROWS_AS(manager.report_to(memory, name, &events), std::invalid_argument);
  }
  CHECK_THROWS_WITH(manager.report_to(memory, "", &events), Catch::Contains("1 to 128 characters"));
  manager.report_to(memory, std::string(128, 'n'), &events);
  CHECK_THROWS_AS(manager.report_to(memory, "again", &events), std::logic_error);
}

TEST_CASE("an in-process memory without an emitter gets the snapshots only", "[report]") {
  scale::Runtime runtime;
  scale::SharedMemory memory;
  scale::SharedEventEmitter events;  // nobody reports here
  auto seen = std::make_shared<Events>();
  auto subscription = events.on("_scale/managers", [seen](const json& payload) { seen->add(payload); });
  {
    scale::ThreadPoolManager pool(1);
    pool.report_to(memory, "quiet");
    REQUIRE(eventually([&] { return memory.entry("_scale/managers/quiet").get().has_value(); }));
  }
  CHECK(!memory.entry("_scale/managers/quiet").get().has_value());
  CHECK(seen->items().empty());
}

TEST_CASE("a drain order to a manager that is not a cluster gets the error event and its key is erased",
          "[report][orders]") {
  scale::Runtime runtime;
  const bool store = GENERATE(false, true);
  INFO((store ? "on a store server" : "in process"));
  Target target(store);
  scale::ThreadPoolManager pool(1);
  target.report(pool, "pool");
  REQUIRE(target.seen->wait_for(beat_of("pool")));
  target.memory.set("_scale/orders/pool/o-1", json{{"drain", "thread-0"}}).get();
  auto answer = target.seen->wait_for([](const json& payload) { return payload.value("order", "") == "o-1"; });
  REQUIRE(answer);
  CHECK((*answer)["name"] == "pool");
  CHECK((*answer)["type"] == "Error");
  CHECK_THAT((*answer)["error"].get<std::string>(), Catch::Contains("only a ClusterManager"));
  CHECK(!answer->contains("done"));
  REQUIRE(eventually([&] { return !target.memory.entry("_scale/orders/pool/o-1").get().has_value(); }));
}

namespace {

/// A cluster on its own Redis namespace with one worker of this build, a manager that saw it
/// join and reports to `target`.
struct ReportingCluster {
  explicit ReportingCluster(bool store) : target(store) {
    target.report(manager, "cluster");
    REQUIRE(eventually([&] {
      for (const auto& worker : manager.workers())
        if (worker.pid == process.pid()) return (id = worker.id), true;
      return false;
    }));
  }
  std::string url = support::fresh_url();
  support::WorkerProcess process{url};
  scale::ClusterManager manager{url, support::fast_options()};
  Target target;
  std::string id;
};

}  // namespace

TEST_CASE("a reporting ClusterManager lists its workers with host, site and heartbeat age, and obeys orders",
          "[report][cluster]") {
  scale::Runtime runtime;
  const bool store = GENERATE(false, true);
  INFO((store ? "on a store server" : "in process"));
  ReportingCluster cluster(store);
  auto beat = cluster.target.seen->wait_for([&](const json& payload) {
    return beat_of("cluster")(payload) && payload["workers"].size() == 1 &&
           payload["workers"][0]["heartbeat_age_ms"].is_number();
  });
  REQUIRE(beat);
  CHECK((*beat)["kind"] == "cluster");
  CHECK((*beat)["orders"] == true);
  check_stats((*beat)["stats"]);
  CHECK((*beat)["stats"]["workers_alive"] == 1);
  const json worker = (*beat)["workers"][0];
  CHECK(worker["id"] == cluster.id);
  CHECK(worker["pid"] == static_cast<int>(cluster.process.pid()));
  CHECK(!worker["host"].get<std::string>().empty());
  CHECK(worker["site"] == "");
  CHECK(worker["concurrency"] == 1);
  CHECK(worker["draining"] == false);
  // A few heartbeats at most (test heartbeats are short; a slow scan adds one period).
  CHECK(worker["heartbeat_age_ms"].get<std::int64_t>() >= 0);
  CHECK(worker["heartbeat_age_ms"].get<std::int64_t>() < 10 * support::test_heartbeat_ttl.count());
}

TEST_CASE("a drain order drains a real cluster worker, which exits 0, and the done event arrives",
          "[report][cluster][orders]") {
  scale::Runtime runtime;
  const bool store = GENERATE(false, true);
  INFO((store ? "on a store server" : "in process"));
  ReportingCluster cluster(store);
  REQUIRE(cluster.target.seen->wait_for(beat_of("cluster")));
  const std::string key = "_scale/orders/cluster/drain_1";
  cluster.target.memory.set(key, json{{"drain", cluster.id}}).get();
  auto done = cluster.target.seen->wait_for([](const json& payload) { return payload.value("order", "") == "drain_1"; });
  REQUIRE(done);
  CHECK((*done)["name"] == "cluster");
  CHECK((*done)["drain"] == cluster.id);
  CHECK((*done)["done"] == true);
  CHECK(!done->contains("error"));
  CHECK(cluster.process.wait_exit(10s) == 0);
  REQUIRE(eventually([&] { return !cluster.target.memory.entry(key).get().has_value(); }));
  // The report no longer lists it.
  REQUIRE(cluster.target.seen->wait_for([&](const json& payload) {
    return beat_of("cluster")(payload) && payload["workers"].empty();
  }));
}

TEST_CASE("an order for an unknown worker, with bad JSON or a bad order id gets the error event and is erased",
          "[report][cluster][orders][errors]") {
  scale::Runtime runtime;
  ReportingCluster cluster(false);
  REQUIRE(cluster.target.seen->wait_for(beat_of("cluster")));
  auto& memory = cluster.target.memory;
  memory.set("_scale/orders/cluster/unknown", json{{"drain", "no-such-worker"}}).get();
  memory.set("_scale/orders/cluster/text", json("{not json")).get();
  memory.set("_scale/orders/cluster/shape", json{{"drain", 7}}).get();
  memory.set("_scale/orders/cluster/bad.id", json{{"drain", cluster.id}}).get();
  for (const std::string id : {"unknown", "text", "shape", "bad.id"}) {
    INFO(id);
    auto answer = cluster.target.seen->wait_for([&](const json& payload) { return payload.value("order", "") == id; });
    REQUIRE(answer);
    CHECK((*answer)["name"] == "cluster");
    CHECK((*answer)["type"] == "Error");
    CHECK(!answer->contains("done"));
    const std::string message = (*answer)["error"].get<std::string>();
    if (id == "unknown") {
      CHECK_THAT(message, Catch::Contains("no-such-worker") && Catch::Contains(cluster.id));
    } else if (id == "bad.id") {
      CHECK_THAT(message, Catch::Contains("1 to 64 characters"));
    } else {
      CHECK_THAT(message, Catch::Contains("{\"drain\": \"<worker id>\"}"));
    }
    REQUIRE(eventually([&] { return !memory.entry("_scale/orders/cluster/" + id).get().has_value(); }));
  }
  // The worker was left alone.
  CHECK(cluster.process.wait_exit(0ms) == -1);
  CHECK(cluster.manager.workers().size() == 1);
}

TEST_CASE("orders written before the manager reported are obeyed when it starts", "[report][cluster][orders]") {
  scale::Runtime runtime;
  const std::string url = support::fresh_url();
  support::WorkerProcess process(url);
  scale::ClusterManager manager(url, support::fast_options());
  std::string id;
  REQUIRE(eventually([&] {
    for (const auto& worker : manager.workers())
      if (worker.pid == process.pid()) return (id = worker.id), true;
    return false;
  }));
  Target target(true);
  target.memory.set("_scale/orders/early/first", json{{"drain", id}}).get();
  target.report(manager, "early");
  auto done = target.seen->wait_for([](const json& payload) { return payload.value("order", "") == "first"; });
  REQUIRE(done);
  CHECK((*done)["done"] == true);
  CHECK(process.wait_exit(10s) == 0);
}

int main(int argc, char** argv) {
  // In a worker this serves and never returns. In the parent the Runtime goes away again: each
  // test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
