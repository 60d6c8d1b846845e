// ClusterManager's leased matcher (src/cluster/matcher.hpp): one manager at a time holds the lease
// <tag>:matcher and hands it on when it goes; workers report their round trip to Redis; with two
// managers on two sites, idle workers are assigned to the manager of their own site and run its
// items; a worker whose assignment lapses serves every manager in turn again. Workers are this very
// test executable started with --scale-worker URL on a redis-server the tests start (the site case
// starts them in UTS namespaces of their own, so each has a host name other than the managers');
// a manager that the test kills is this executable too, started with `matcher-manager URL`. Each
// test case uses its own namespace on the shared server and kills what it started by pid.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <sched.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/spawn.hpp"
#include "support/worker_process.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;
using namespace support;
using Clock = std::chrono::steady_clock;

constexpr const char* manager_mode = "matcher-manager";

// ----- worker functions -----

/// Where an item ran (the worker's host name) and when it started.
auto host_and_start_40ms = [](int) {
  const std::int64_t started = monotonic_us();
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::this_thread::sleep_for(40ms);
  return std::pair<std::string, std::int64_t>(host, started);
};

/// When an item started; it holds for 20 ms.
auto start_of_20ms = [](int) {
  const std::int64_t started = monotonic_us();
  std::this_thread::sleep_for(20ms);
  return started;
};

// ----- helpers -----

std::string lease_holder(const std::string& url) {
  const auto reply = redis(url, {"GET", tag_of(url) + ":matcher"});
  return reply.is_nil() ? std::string() : reply.str;
}

std::set<std::string> manager_ids(const std::string& url) {
  std::set<std::string> ids;
  for (const auto& id : redis(url, {"HKEYS", tag_of(url) + ":managers"}).elements) ids.insert(id.str);
  return ids;
}

/// The id of the one manager in `now` that is not in `before`.
std::string new_manager(const std::string& url, const std::set<std::string>& before) {
  std::string id;
  REQUIRE(eventually([&] {
    for (const auto& candidate : manager_ids(url))
      if (before.count(candidate) == 0) id = candidate;
    return !id.empty();
  }));
  return id;
}

/// How many times manager `id` has written its demand field (0: not yet).
std::uint64_t demand_writes(const std::string& url, const std::string& id) {
  for (const auto& key : redis(url, {"KEYS", tag_of(url) + ":demand:*"}).elements) {
    const auto field = redis(url, {"HGET", key.str, id});
    if (field.type == scale::detail::RedisReply::Type::string)
      return nlohmann::json::parse(field.str).value("writes", std::uint64_t{0});
  }
  return 0;
}

std::optional<scale::ClusterWorker> worker_with_pid(const scale::ClusterManager& manager, pid_t pid) {
  for (auto& worker : manager.workers())
    if (worker.pid == pid) return worker;
  return std::nullopt;
}

scale::ClusterWorker joined(const scale::ClusterManager& manager, pid_t pid) {
  std::optional<scale::ClusterWorker> found;
  REQUIRE(eventually([&] { return (found = worker_with_pid(manager, pid)).has_value(); }));
  return *found;
}

/// A process of this executable with `args`, killed by its pid when the object goes.
class Child {
 public:
  template <class InChild>
  Child(std::vector<std::string> args, InChild in_child) : m_pid(spawn("/proc/self/exe", args, in_child)) {}
  explicit Child(std::vector<std::string> args) : Child(std::move(args), [] {}) {}
  ~Child() { kill(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return m_pid; }
  void kill() {
    if (m_pid <= 0) return;
    ::kill(m_pid, SIGKILL);
    ::waitpid(m_pid, nullptr, 0);
    m_pid = -1;
  }

 private:
  pid_t m_pid;
};

/// Whether this process may give a child a host name of its own (root, or CAP_SYS_ADMIN).
bool can_rename_hosts() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(::unshare(CLONE_NEWUTS) == 0 && ::sethostname("probe", 5) == 0 ? 0 : 1);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/// A worker of this executable whose host name is `host` (a UTS namespace of its own).
std::unique_ptr<Child> worker_on_host(const std::string& url, const std::string& host, std::vector<std::string> flags) {
  std::vector<std::string> args{"--scale-worker", url, "--scale-heartbeat-ms", std::to_string(test_heartbeat.count())};
  args.insert(args.end(), flags.begin(), flags.end());
  return std::make_unique<Child>(args, [host] {
    if (::unshare(CLONE_NEWUTS) != 0 || ::sethostname(host.c_str(), host.size()) != 0) ::_exit(3);
  });
}

scale::RunOptions one_per_chunk() {
  scale::RunOptions options;
  options.chunk_size = 1;
  return options;
}

/// The managers of this executable started with `matcher-manager URL` run until killed.
[[noreturn]] void serve_as_manager(const std::string& url) {
  scale::Runtime runtime;
  scale::ClusterManager manager(url, fast_options());
  for (;;) std::this_thread::sleep_for(1s);
}

}  // namespace

TEST_CASE("one manager of three holds the matcher's lease, and keeps it while it lives", "[cluster][matcher]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  auto first = std::make_unique<scale::ClusterManager>(url, fast_options());
  const std::string first_id = new_manager(url, {});
  REQUIRE(eventually([&] { return lease_holder(url) == first_id; }));

  scale::ClusterManager second(url, fast_options());
  const std::string second_id = new_manager(url, {first_id});
  scale::ClusterManager third(url, fast_options());
  const std::string third_id = new_manager(url, {first_id, second_id});
  // Several scans of each newcomer later, the lease has not moved: they tried and were refused.
  REQUIRE(eventually([&] { return demand_writes(url, second_id) >= 5 && demand_writes(url, third_id) >= 5; }));
  CHECK(lease_holder(url) == first_id);
  // Its TTL is the lease's, renewed at every scan.
  const auto ttl = redis(url, {"PTTL", tag_of(url) + ":matcher"}).integer;
  CHECK(ttl > 0);
  CHECK(ttl <= 3000);

  // Destroyed, the holder releases it, and one of the others takes it at its next scan.
  first.reset();
  std::string holder;
  REQUIRE(eventually([&] { return !(holder = lease_holder(url)).empty() && holder != first_id; }, 5s));
  CHECK((holder == second_id || holder == third_id));
  // Its demand field went with it.
  CHECK(demand_writes(url, first_id) == 0);
}

TEST_CASE("the lease moves to another manager when its holder's process is killed", "[cluster][matcher]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  Child killed({manager_mode, url});
  const std::string killed_id = new_manager(url, {});
  REQUIRE(eventually([&] { return lease_holder(url) == killed_id; }));
  scale::ClusterManager survivor(url, fast_options());
  const std::string survivor_id = new_manager(url, {killed_id});
  REQUIRE(eventually([&] { return demand_writes(url, survivor_id) >= 3; }));
  CHECK(lease_holder(url) == killed_id);

  killed.kill();
  const auto killed_at = Clock::now();
  // The lease lapses 3 s after its last renewal; the survivor takes it at its next scan.
  REQUIRE(eventually([&] { return lease_holder(url) == survivor_id; }, 15s));
  CHECK(Clock::now() - killed_at < 4s * beat_scale + 2s);
}

TEST_CASE("a worker's heartbeat carries its round trip to Redis, and workers() shows it", "[cluster][matcher]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess worker(url);
  scale::ClusterManager manager(url, fast_options());
  std::optional<scale::ClusterWorker> seen;
  REQUIRE(eventually([&] { return (seen = worker_with_pid(manager, worker.pid())) && seen->rtt.count() > 0; }));
  CHECK(seen->rtt < 1s);  // loopback
  // Its record in the registry carries it from its second beat on (the first one is sent before
  // any round trip was measured).
  nlohmann::json record;
  REQUIRE(eventually([&] {
    record = nlohmann::json::parse(redis(url, {"HGET", tag_of(url) + ":workers", seen->id}).str);
    return record.value("rtt_us", std::int64_t{0}) > 0;
  }));
  // An idle worker says it runs nothing.
  CHECK(record.at("running").get<std::size_t>() == 0);
}

TEST_CASE("with two managers on two sites, idle workers are assigned to the manager of their own site and run its "
          "items",
          "[cluster][matcher]") {
  if (!can_rename_hosts()) {
    WARN("skipped: giving a worker a host name of its own (unshare CLONE_NEWUTS) needs root");
    return;
  }
  scale::Runtime runtime;
  const std::string url = fresh_url();
  // Four workers on hosts of their own, two per site; the managers run on this host.
  std::map<std::string, std::string> site_of_host{
      {"matcher-a1", "a"}, {"matcher-a2", "a"}, {"matcher-b1", "b"}, {"matcher-b2", "b"}};
  std::vector<std::unique_ptr<Child>> workers;
  for (const auto& [host, site] : site_of_host) workers.push_back(worker_on_host(url, host, {"--scale-site", site}));
  scale::ClusterOptions on_a = fast_options(), on_b = fast_options();
  on_a.site = "a";
  on_b.site = "b";
  scale::ClusterManager a(url, on_a);
  const std::string a_id = new_manager(url, {});
  scale::ClusterManager b(url, on_b);
  const std::string b_id = new_manager(url, {a_id});
  std::map<pid_t, std::string> worker_ids;  // pid → id
  for (const auto& worker : workers) worker_ids[worker->pid()] = joined(a, worker->pid()).id;
  std::map<std::string, std::string> manager_of_site{{"a", a_id}, {"b", b_id}};

  scale::Iterator<int> of_a(iota(80), a), of_b(iota(80), b);
  auto ran_a = of_a.map(host_and_start_40ms, one_per_chunk());
  auto ran_b = of_b.map(host_and_start_40ms, one_per_chunk());

  // Each worker is assigned to its own site's manager while both have work queued.
  std::map<std::string, std::string> expected;  // worker id → manager id
  for (const auto& worker : workers) {
    const auto record = nlohmann::json::parse(redis(url, {"HGET", tag_of(url) + ":workers", worker_ids[worker->pid()]}).str);
    expected[worker_ids[worker->pid()]] = manager_of_site.at(record.at("site").get<std::string>());
  }
  std::set<std::string> seen_right;
  std::int64_t all_assigned_at = 0;
  REQUIRE(eventually(
      [&] {
        for (const auto& [worker, manager] : expected) {
          const auto assigned = redis(url, {"GET", tag_of(url) + ":assignment:" + worker});
          if (assigned.type == scale::detail::RedisReply::Type::string && assigned.str == manager)
            seen_right.insert(worker);
        }
        all_assigned_at = monotonic_us();
        return seen_right.size() == expected.size();
      },
      10s, 5ms));
  const auto a_items = std::move(ran_a).get();
  const auto b_items = std::move(ran_b).get();

  // Items that started once every worker had its assignment, and before either manager ran out of
  // items to queue (then its site's workers rightly serve the other), ran on their manager's site.
  auto last_start = [](const std::vector<std::pair<std::string, std::int64_t>>& items) {
    std::int64_t last = 0;
    for (const auto& [host, start] : items) last = std::max(last, start);
    return last;
  };
  const std::int64_t until = std::min(last_start(a_items), last_start(b_items));
  std::size_t counted = 0, at_home = 0;
  for (const auto& [items, site] : {std::pair{&a_items, "a"}, std::pair{&b_items, "b"}})
    for (const auto& [host, start] : *items) {
      if (start < all_assigned_at || start >= until) continue;
      ++counted;
      if (site_of_host.at(host) == site) ++at_home;
    }
  INFO("items counted " << counted << ", on their manager's site " << at_home);
  REQUIRE(counted >= 10);
  // Round robin alone would put about half of them on the other site.
  CHECK(static_cast<double>(at_home) >= 0.8 * static_cast<double>(counted));
}

TEST_CASE("a worker serves its assigned manager first, and every manager in turn once the assignment lapses",
          "[cluster][matcher]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  // The test holds the lease, so no manager writes assignments: the test writes the one it wants.
  redis(url, {"SET", tag_of(url) + ":matcher", "the-test", "PX", "60000"});
  WorkerProcess worker(url);
  scale::ClusterManager first(url, fast_options());
  const std::string first_id = new_manager(url, {});
  scale::ClusterManager second(url, fast_options());
  new_manager(url, {first_id});
  const std::string worker_id = joined(first, worker.pid()).id;
  joined(second, worker.pid());
  const std::string key = tag_of(url) + ":assignment:" + worker_id;

  // An assignment naming a manager with nothing queued changes nothing: the worker serves the others.
  redis(url, {"SET", key, "no-such-manager", "PX", "60000"});
  scale::Iterator<int> few(iota(5), second);
  CHECK(few.map(start_of_20ms, one_per_chunk()).get().size() == 5);

  // Assigned to the first manager (for 6 heartbeats), the worker takes the first's items while
  // the key lives; once it lapses, both managers' items run in turn. The first has items for
  // about three times as long as the key lives (at 20 ms each), so some are left after it lapses.
  const auto lives = 6 * test_heartbeat;
  const int first_items = static_cast<int>(3 * lives / 20ms);
  redis(url, {"SET", key, first_id, "PX", std::to_string(lives.count())});
  const std::int64_t set_at = monotonic_us();
  scale::Iterator<int> a(iota(first_items), first), b(iota(50), second);
  auto from_first = a.map(start_of_20ms, one_per_chunk());
  auto from_second = b.map(start_of_20ms, one_per_chunk());
  std::int64_t lapsed_at = 0;
  REQUIRE(eventually([&] { return redis(url, {"EXISTS", key}).integer == 0; }, 30s, 5ms));
  lapsed_at = monotonic_us();
  const std::vector<std::int64_t> of_first = std::move(from_first).get();
  const std::vector<std::int64_t> of_second = std::move(from_second).get();

  // Two heartbeats after the key was set the worker has read it; from then to the lapse, the
  // second's items waited, save one now and then that the worker took when the first's stream was
  // empty for a moment (between a result and the chunk its manager queues next).
  const std::int64_t read_by = set_at + 2 * std::chrono::duration_cast<std::chrono::microseconds>(test_heartbeat).count();
  auto count_between = [](const std::vector<std::int64_t>& starts, std::int64_t from, std::int64_t to) {
    return std::count_if(starts.begin(), starts.end(), [&](std::int64_t t) { return from <= t && t < to; });
  };
  const auto first_while_assigned = count_between(of_first, read_by, lapsed_at);
  const auto second_while_assigned = count_between(of_second, read_by, lapsed_at);
  INFO("while assigned: first " << first_while_assigned << ", second " << second_while_assigned);
  CHECK(first_while_assigned >= 10);
  CHECK(4 * second_while_assigned <= first_while_assigned);  // round robin: about as many
  // After the lapse (and the worker's next beat), the first's remaining items ran among the second's.
  const std::int64_t after = lapsed_at + std::chrono::duration_cast<std::chrono::microseconds>(test_heartbeat).count();
  const std::int64_t first_last = *std::max_element(of_first.begin(), of_first.end());
  CHECK(count_between(of_first, after, first_last + 1) >= 3);
  CHECK(count_between(of_second, after, first_last) >= 3);
}

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == manager_mode) serve_as_manager(argv[2]);
  // In a worker this serves and never returns. In the parent the Runtime goes away again: each
  // test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
