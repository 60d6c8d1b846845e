// ClusterManager routing: what workers provide (--scale-provides, --scale-site, orders) and what
// calls need (RunOptions::resources and ::labels). The three outcomes (Unsatisfiable at once,
// waiting for a busy worker, NoWorkers), the amounts a worker holds while chunks run, no
// head-of-line blocking between classes, and provides changed at runtime. Workers are this very
// test executable started with --scale-worker URL on a redis-server the tests start; main()
// builds the Runtime from argc/argv first, so in a worker it serves and never returns. Each test
// case uses its own namespace on the shared server and kills its workers by pid.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/worker_process.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;
using namespace support;
using Clock = std::chrono::steady_clock;

// ----- worker functions -----

auto pid_of = [](int) { return static_cast<int>(::getpid()); };

/// Counts the items running at once in the scope ("running"; "over" counts starts that found more
/// than two running), holds for 150 ms, and returns its span.
auto counts_running = [](int, scale::Scope& scope) {
  const std::int64_t started = monotonic_us();
  if (scope.increment("running", 1).get() > 2) scope.increment("over", 1).get();
  std::this_thread::sleep_for(150ms);
  scope.increment("running", -1).get();
  return std::pair<std::int64_t, std::int64_t>(started, monotonic_us());
};

/// (start, end) of an item that holds for 150 ms.
auto span_of_150ms = [](int) {
  const std::int64_t started = monotonic_us();
  std::this_thread::sleep_for(150ms);
  return std::pair<std::int64_t, std::int64_t>(started, monotonic_us());
};

/// (start, end) of an item that holds for 30 ms.
auto span_of_30ms = [](int) {
  const std::int64_t started = monotonic_us();
  std::this_thread::sleep_for(30ms);
  return std::pair<std::int64_t, std::int64_t>(started, monotonic_us());
};

/// Says it runs ("held" = its pid), then holds until the test sets "release" (20 s at most).
auto held_until_released = [](int, scale::Scope& scope) {
  scope.set("held", static_cast<int>(::getpid())).get();
  const auto until = Clock::now() + 20s;
  while (!scope.entry("release").get() && Clock::now() < until) std::this_thread::sleep_for(5ms);
  return static_cast<int>(::getpid());
};

// ----- helpers -----

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::optional<scale::ClusterWorker> worker_with_pid(const scale::ClusterManager& manager, pid_t pid) {
  for (auto& worker : manager.workers())
    if (worker.pid == pid) return worker;
  return std::nullopt;
}

/// The live worker with process id `pid`, once the manager has seen it.
scale::ClusterWorker joined(const scale::ClusterManager& manager, pid_t pid) {
  std::optional<scale::ClusterWorker> found;
  REQUIRE(eventually([&] { return (found = worker_with_pid(manager, pid)).has_value(); }));
  return *found;
}

/// The most items that ran at the same time, from their [start, end) times.
std::size_t most_at_once(const std::vector<std::pair<std::int64_t, std::int64_t>>& spans) {
  std::size_t most = 0;
  for (auto& [start, end] : spans) {
    std::size_t at_once = 0;
    for (auto& [other_start, other_end] : spans)
      if (other_start <= start && start < other_end) ++at_once;
    most = std::max(most, at_once);
  }
  return most;
}

std::int64_t count_of(scale::SharedMemory& memory, const std::string& key) {
  auto entry = memory.entry(key).get();
  return entry ? entry->value.get<std::int64_t>() : 0;
}

/// Entries in every task stream of the namespace (queued and not yet removed).
std::int64_t queued_entries(const std::string& url) {
  std::int64_t total = 0;
  for (auto& key : redis(url, {"KEYS", tag_of(url) + ":tasks:*"}).elements) total += redis(url, {"XLEN", key.str}).integer;
  return total;
}

scale::RunOptions needing(std::map<std::string, double> resources, std::map<std::string, std::string> labels = {}) {
  scale::RunOptions options;
  options.chunk_size = 1;
  options.resources = std::move(resources);
  options.labels = std::move(labels);
  return options;
}

}  // namespace

TEST_CASE("a worker given a bad --scale-provides entry, or two sites, exits 2 with a usage line naming the entry",
          "[cluster][routing][errors]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{"--scale-provides", "gpu"}, "'gpu' has no '='"},
      {{"--scale-provides", "gpu=1,mem_gb=-4"}, "'mem_gb=-4'"},
      {{"--scale-provides=gpu=1,=2"}, "'=2' has an empty name"},
      {{"--scale-provides", "gpu=1,gpu=2"}, "'gpu=2' names 'gpu' a second time"},
      {{"--scale-site", "eu-1", "--scale-provides", "site=us-2"}, "two sites"},
  };
  int n = 0;
  for (const auto& [flags, problem] : cases) {
    const std::string log = "/tmp/scale-routing-flags-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    WorkerProcess worker(url, {.extra = flags, .stderr_file = log});
    CHECK(worker.wait_exit(10s) == 2);
    const std::string text = read_file(log);
    ::unlink(log.c_str());
    CHECK_THAT(text, Catch::Contains(problem) && Catch::Contains("usage:") &&
                         Catch::Contains("--scale-provides name=value,...") && Catch::Contains("--scale-site NAME"));
    // It never joined.
    CHECK(redis(url, {"HLEN", tag_of(url) + ":workers"}).integer == 0);
  }
}

TEST_CASE("workers() shows each worker's host, site and provides, and the manager's site is published",
          "[cluster][routing]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess with_site(url, {.extra = {"--scale-provides", "gpu=2,zone=a", "--scale-site", "eu-1"}});
  WorkerProcess plain(url);
  scale::ClusterOptions options = fast_options();
  options.site = "eu-2";
  scale::ClusterManager manager(url, options);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);

  const scale::ClusterWorker first = joined(manager, with_site.pid());
  CHECK(first.host == host);
  CHECK(first.site == "eu-1");
  CHECK(first.provides == scale::Provides{{"gpu", "2"}, {"zone", "a"}, {"site", "eu-1"}});
  const scale::ClusterWorker second = joined(manager, plain.pid());
  CHECK(second.host == host);
  CHECK(second.site.empty());
  CHECK(second.provides.empty());
  // Its heartbeat record carries them.
  const std::string record = redis(url, {"HGET", tag_of(url) + ":workers", first.id}).str;
  CHECK_THAT(record, Catch::Contains("\"site\":\"eu-1\"") && Catch::Contains("\"gpu\":\"2\""));

  // The manager's field in the build's directory names its site and its streams.
  const auto directories = redis(url, {"KEYS", tag_of(url) + ":classes:*"});
  REQUIRE(directories.elements.size() == 1);
  const auto ids = redis(url, {"HKEYS", tag_of(url) + ":managers"});
  REQUIRE(ids.elements.size() == 1);
  const std::string field = redis(url, {"HGET", directories.elements[0].str, ids.elements[0].str}).str;
  CHECK_THAT(field, Catch::Contains("\"site\":\"eu-2\"") && Catch::Contains("\"any\""));

  // A label site=eu-1 is met by the worker started with --scale-site eu-1 alone.
  scale::Iterator<int> numbers(iota(6), manager);
  const std::vector<int> pids = numbers.map(pid_of, needing({}, {{"site", "eu-1"}})).get();
  CHECK(std::set<int>(pids.begin(), pids.end()) == std::set<int>{with_site.pid()});
}

TEST_CASE("a requirement no worker can ever meet fails with Unsatisfiable at once, naming what each worker offers",
          "[cluster][routing][errors]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess cpu(url, {.extra = {"--scale-provides", "cpu=4"}});
  WorkerProcess gpu(url, {.extra = {"--scale-provides", "gpu=1,site=eu-1"}});
  scale::ClusterManager manager(url, fast_options());
  const scale::ClusterWorker cpu_worker = joined(manager, cpu.pid());
  const scale::ClusterWorker gpu_worker = joined(manager, gpu.pid());
  scale::Iterator<int> numbers(iota(20), manager);

  for (const scale::RunOptions& options : {needing({{"gpu", 2}}), needing({{"gpu", 1}}, {{"site", "us-2"}})}) {
    const auto started = Clock::now();
    try {
      numbers.map(pid_of, options).get();
      FAIL("the call should have failed");
    } catch (const scale::Unsatisfiable& error) {
      CHECK(Clock::now() - started < 2s);  // the target is 100 ms; generous for a loaded machine
      CHECK_THAT(error.what(), Catch::Contains(cpu_worker.id + " {cpu=4}") &&
                                   Catch::Contains(gpu_worker.id + " {gpu=1,site=eu-1}"));
    }
  }
  CHECK_THROWS_WITH(numbers.map(pid_of, needing({{"gpu", 2}})).get(), Catch::Contains("needs {gpu=2}"));
  // Nothing of those calls was queued for a worker.
  CHECK(queued_entries(url) == 0);
  // What one worker can meet runs there, and only there.
  const std::vector<int> pids = numbers.map(pid_of, needing({{"gpu", 1}}, {{"site", "eu-1"}})).get();
  CHECK(std::set<int>(pids.begin(), pids.end()) == std::set<int>{gpu.pid()});
  const std::vector<int> on_cpu = numbers.map(pid_of, needing({{"cpu", 2.5}})).get();
  CHECK(std::set<int>(on_cpu.begin(), on_cpu.end()) == std::set<int>{cpu.pid()});
}

TEST_CASE("with no worker at all, a call with a requirement fails with NoWorkers after wait_for_workers",
          "[cluster][routing][errors]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  scale::ClusterOptions options = fast_options();
  options.wait_for_workers = 500ms;
  scale::ClusterManager manager(url, options);
  scale::Iterator<int> numbers(iota(4), manager);
  const auto started = Clock::now();
  CHECK_THROWS_AS(numbers.map(pid_of, needing({{"gpu", 1}})).get(), scale::NoWorkers);
  CHECK(Clock::now() - started >= 500ms);
}

TEST_CASE("a gpu=2 worker with --scale-threads 4 never runs more than two gpu=1 chunks at once",
          "[cluster][routing]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess worker(url, {.extra = {"--scale-provides", "gpu=2", "--scale-threads", "4"}});
  scale::ClusterManager manager(url, fast_options());
  joined(manager, worker.pid());
  scale::SharedMemory memory(url);
  scale::Iterator<int> numbers(iota(10), manager);
  numbers.use_scope(memory);
  const auto spans = numbers.map(counts_running, needing({{"gpu", 1}})).get();
  CHECK(count_of(memory, "over") == 0);
  CHECK(most_at_once(spans) == 2);
  // Half a gpu each: four at once, as many as its threads.
  CHECK(most_at_once(numbers.map(span_of_150ms, needing({{"gpu", 0.5}})).get()) == 4);
  // Needing nothing, its four threads.
  CHECK(most_at_once(numbers.map(span_of_150ms, needing({})).get()) == 4);
}

TEST_CASE("with the only gpu worker busy on a long chunk, a call that needs nothing completes on the others, and "
          "another gpu call waits for it",
          "[cluster][routing]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess gpu(url, {.extra = {"--scale-provides", "gpu=1"}});
  WorkerProcess a(url), b(url);
  scale::ClusterManager manager(url, fast_options());
  for (pid_t pid : {gpu.pid(), a.pid(), b.pid()}) joined(manager, pid);
  scale::SharedMemory memory(url);
  scale::Iterator<int> one(iota(1), manager);
  one.use_scope(memory);
  auto long_gpu = one.map(held_until_released, needing({{"gpu", 1}}));
  REQUIRE(eventually([&] { return memory.entry("held").get().has_value(); }));
  CHECK(memory.get<int>("held").get() == gpu.pid());
  // A second gpu call waits for the busy worker: neither fails nor runs elsewhere.
  scale::Iterator<int> two(iota(2), manager);
  auto waiting_gpu = two.map(pid_of, needing({{"gpu", 1}}));

  scale::Iterator<int> many(iota(40), manager);
  const std::vector<int> pids = many.map(pid_of, needing({})).get();
  CHECK(std::set<int>(pids.begin(), pids.end()) == std::set<int>{a.pid(), b.pid()});
  CHECK_FALSE(long_gpu.ready());
  CHECK_FALSE(waiting_gpu.ready());

  memory.set("release", true).get();
  CHECK(std::move(long_gpu).get() == std::vector<int>{gpu.pid()});
  CHECK(std::move(waiting_gpu).get() == std::vector<int>{gpu.pid(), gpu.pid()});
  CHECK(manager.stats().tasks_retried == 0);
}

TEST_CASE("a call that was unsatisfiable completes once the worker is ordered to provide what it needs",
          "[cluster][routing]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess worker(url);
  scale::ClusterManager manager(url, fast_options());
  const scale::ClusterWorker before = joined(manager, worker.pid());
  scale::Iterator<int> numbers(iota(5), manager);
  const scale::RunOptions options = needing({{"gpu", 1}});
  CHECK_THROWS_AS(numbers.map(pid_of, options).get(), scale::Unsatisfiable);

  manager.order(before.id, scale::WorkerOrder{.provides = scale::Provides{{"gpu", "1"}}}).get();
  CHECK(worker_with_pid(manager, worker.pid())->provides == scale::Provides{{"gpu", "1"}});
  CHECK(numbers.map(pid_of, options).get() == std::vector<int>(5, worker.pid()));

  // Ordered to provide nothing again, the same call is unsatisfiable again.
  manager.order(before.id, scale::WorkerOrder{.provides = scale::Provides{}}).get();
  CHECK_THROWS_AS(numbers.map(pid_of, options).get(), scale::Unsatisfiable);
  // Provides that --scale-provides would refuse are refused before they travel.
  CHECK_THROWS_AS(manager.order(before.id, scale::WorkerOrder{.provides = scale::Provides{{"gpu", "-1"}}}).get(),
                  std::invalid_argument);
}

TEST_CASE("a worker serves two managers with queued work in turn, not the first one until it drains",
          "[cluster][routing]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess worker(url);
  scale::ClusterManager first(url, fast_options()), second(url, fast_options());
  joined(first, worker.pid());
  joined(second, worker.pid());
  scale::Iterator<int> a(iota(20), first), b(iota(20), second);
  auto from_first = a.map(span_of_30ms, needing({}));
  REQUIRE(eventually([&] { return first.stats().tasks_done >= 1; }));
  const auto from_second = b.map(span_of_30ms, needing({})).get();
  const auto first_spans = std::move(from_first).get();
  // While both had work, the worker took theirs in turn, whichever stream it finds first: the
  // second's items ran before the first's last one, and the first's between the second's first
  // and last, about every other item.
  auto starts = [](const std::vector<std::pair<std::int64_t, std::int64_t>>& spans) {
    std::vector<std::int64_t> out;
    for (auto& [start, end] : spans) out.push_back(start);
    std::sort(out.begin(), out.end());
    return out;
  };
  const std::vector<std::int64_t> of_first = starts(first_spans), of_second = starts(from_second);
  const auto second_before_first_ends =
      std::count_if(of_second.begin(), of_second.end(), [&](std::int64_t t) { return t < of_first.back(); });
  const auto first_among_second = std::count_if(of_first.begin(), of_first.end(), [&](std::int64_t t) {
    return of_second.front() < t && t < of_second.back();
  });
  CHECK(second_before_first_ends >= 5);
  CHECK(first_among_second >= 5);
}

int main(int argc, char** argv) {
  // In a worker this serves and never returns. In the parent the Runtime goes away again: each
  // test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
