// Stop and progress on the ProcessPoolManager: stop frames reach the child, a child that ignores
// them is killed after the grace (and is no loss), queued chunks are withdrawn, progress frames
// move on_progress inside long items, and Ctrl-C to an application (tests/control_app.cpp) ends
// its map with Cancelled and leaves no worker behind. The control suite (tests/control_suite.hpp)
// runs on the process pool in process_pool_test.cpp; these are what only a process pool has.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "process/task_control.hpp"
#include "support/control_app.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/processes.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using support::eventually;
using support::process_gone;

/// Waits (in 1 ms steps, up to 20 s) for the stop, then notes in the scope which process saw it.
auto note_stop = [](int x, scale::Scope& scope) {
  scope.progress(0.5);
  for (int i = 0; i < 20'000 && !scope.stop_requested(); ++i) std::this_thread::sleep_for(1ms);
  if (scope.stop_requested()) scope.set("saw_stop_in", static_cast<int>(::getpid())).get();
  return x;
};

/// Spins for a minute in C++: no Scope, so it never sees the stop.
auto spin_for_a_minute = [](int x) {
  const auto until = Clock::now() + 60s;
  volatile int spins = 0;
  while (Clock::now() < until) spins = spins + 1;
  return x;
};

/// Counts its start in the scope, says it runs, and waits for the stop.
auto count_then_wait = [](int x, scale::Scope& scope) {
  scope.increment("started").get();
  scope.progress(0.5);
  for (int i = 0; i < 20'000 && !scope.stop_requested(); ++i) std::this_thread::sleep_for(1ms);
  return x;
};

/// Ten steps of 60 ms, each reported.
auto ten_long_steps = [](int x, scale::Scope& scope) {
  for (int step = 1; step <= 10; ++step) {
    std::this_thread::sleep_for(60ms);
    scope.progress(step / 10.0);
  }
  return x;
};

auto twice = [](int x) { return 2 * x; };

std::vector<int> twice_each(const std::vector<int>& items) {
  std::vector<int> out;
  for (int x : items) out.push_back(2 * x);
  return out;
}

bool all_gone(const std::vector<pid_t>& pids) { return std::all_of(pids.begin(), pids.end(), process_gone); }

}  // namespace

TEST_CASE("a function running in a worker process sees scope.stop_requested()", "[process_pool][control]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});
  scale::SharedMemory memory;
  scale::Iterator<int> numbers(support::iota(1), manager);
  numbers.use_scope(memory);
  std::stop_source source;
  // The item reports 0.5 as it starts; that report, carried by a progress frame, asks for the stop.
  scale::RunOptions options{.stop = source.get_token(), .grace = 60s, .on_progress = [&](const scale::Progress& p) {
                              if (p.fraction > 0) source.request_stop();
                            }};
  const auto start = Clock::now();
  REQUIRE_THROWS_AS(numbers.map(note_stop, options).get(), scale::Cancelled);
  REQUIRE(Clock::now() - start < 10s);
  const int seen_in = memory.get<int>("saw_stop_in").get();
  REQUIRE(seen_in != ::getpid());
  REQUIRE(manager.stats().workers_lost == 0);
  REQUIRE(manager.stats().workers_spawned == 1);  // it returned by itself: nothing was killed
}

TEST_CASE("a function that ignores the stop is killed after the grace, is not counted as lost, and the pool goes on",
          "[process_pool][control]") {
  scale::Runtime runtime;
  // One worker: it runs the first chunk and holds the second, pipelined behind it.
  scale::ProcessPoolManager manager({.max_workers = 1, .min_workers = 1});
  scale::Iterator<int> numbers(support::iota(2), manager);
  std::stop_source source;
  constexpr auto grace = 300ms;
  auto pending = numbers.map(spin_for_a_minute, {.chunk_size = 1, .stop = source.get_token(), .grace = grace});
  REQUIRE(eventually([&] { return manager.stats().tasks_running == 2; }));
  const std::vector<pid_t> spinning = manager.worker_pids();
  REQUIRE(spinning.size() == 1);

  const auto stopped_at = Clock::now();
  source.request_stop();
  REQUIRE_THROWS_AS(pending.get(), scale::Cancelled);
  const auto took = Clock::now() - stopped_at;
  CHECK(took >= grace);  // the grace is kept: nothing is killed before it ends
  CHECK(took < grace + 1s);
  REQUIRE(eventually([&] { return all_gone(spinning); }, 1000ms));

  const auto stats = manager.stats();
  CHECK(stats.workers_lost == 0);
  CHECK(stats.tasks_retried == 0);
  CHECK(stats.tasks_running == 0);
  // Replaced (min_workers), and the pool runs the next map.
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1 && manager.stats().workers_spawned == 2; }));
  REQUIRE(numbers.map(twice).get() == twice_each(support::iota(2)));
  REQUIRE(scale::Iterator<int>(support::iota(1000), manager).map(twice).get() == twice_each(support::iota(1000)));
  CHECK(manager.stats().workers_lost == 0);
}

TEST_CASE("a stop withdraws the queued chunks: no item starts after it", "[process_pool][control]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});
  scale::SharedMemory memory;
  scale::Iterator<int> numbers(support::iota(50), manager);
  numbers.use_scope(memory);
  std::stop_source source;
  // One worker holds the running chunk and the next one (pipelined); the other 48 wait here.
  scale::RunOptions options{.chunk_size = 1, .stop = source.get_token(), .on_progress = [&](const scale::Progress& p) {
                              if (p.fraction > 0) source.request_stop();
                            }};
  REQUIRE_THROWS_AS(numbers.map(count_then_wait, options).get(), scale::Cancelled);
  REQUIRE(memory.get<int>("started").get() == 1);
  auto stats = manager.stats();
  CHECK(stats.tasks_queued == 0);
  CHECK(stats.tasks_running == 0);
  CHECK(stats.workers_lost == 0);
  // Nothing of the stopped call runs later: a call after it finishes, and no item more started.
  REQUIRE(numbers.map(twice).get() == twice_each(support::iota(50)));
  REQUIRE(memory.get<int>("started").get() == 1);
}

TEST_CASE("progress frames move on_progress inside long items on the process pool", "[process_pool][control]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::Iterator<int> numbers(support::iota(2), manager);
  std::vector<scale::Progress> reports;
  scale::RunOptions options{.chunk_size = 1, .on_progress = [&](const scale::Progress& p) { reports.push_back(p); }};
  REQUIRE(numbers.map(ten_long_steps, options).get() == support::iota(2));
  // Two items of 600 ms on two workers: no item is done before the end, so every report before
  // the last moved only through the items' own progress frames.
  std::vector<double> within;
  for (const auto& p : reports)
    if (p.items_done == 0 && p.fraction > 0) within.push_back(p.fraction);
  REQUIRE(within.size() >= 3);
  REQUIRE(std::is_sorted(within.begin(), within.end()));
  REQUIRE(within.front() < within.back());
  REQUIRE(reports.back().fraction == 1.0);
  REQUIRE(reports.back().items_done == 2);
}

TEST_CASE("a worker's task control sends at most one progress frame per task every 50 ms, the latest included",
          "[process_pool][control]") {
  std::mutex mutex;
  std::vector<std::pair<std::uint64_t, double>> sent;
  scale::detail::TaskControl control([&](std::uint64_t id, double items) {
    std::lock_guard lock(mutex);
    sent.emplace_back(id, items);
  });
  auto frames = [&] {
    std::lock_guard lock(mutex);
    return sent;
  };
  control.begin(7);
  control.started();
  // 300 ms of reports as fast as they come: one frame per 50 ms at most.
  const auto start = Clock::now();
  double value = 0;
  while (Clock::now() - start < 300ms) control.set_progress(value += 1e-6);
  // The last value is held back (the interval had not passed) and still arrives, unasked.
  REQUIRE(eventually([&] {
    auto f = frames();
    return !f.empty() && f.back().second == value;
  }));
  auto f = frames();
  CHECK(f.size() <= 300 / 50 + 2);
  CHECK(f.size() >= 2);
  for (auto& [id, items] : f) CHECK(id == 7);
  CHECK(std::is_sorted(f.begin(), f.end(), [](auto& a, auto& b) { return a.second < b.second; }));
  // Nothing new: nothing more is sent.
  std::this_thread::sleep_for(150ms);
  CHECK(frames().size() == f.size());
  control.ended();

  // A report made just before its task ends is sent under that task's id or not at all, never
  // under the next task's.
  control.begin(8);
  control.started();
  control.set_progress(0.25);
  control.ended();
  control.begin(9);
  control.started();
  control.ended();
  std::this_thread::sleep_for(150ms);
  const auto later = frames();
  for (std::size_t i = f.size(); i < later.size(); ++i) {
    CHECK(later[i].first == 8);
    CHECK(later[i].second == 0.25);
  }
}

TEST_CASE("a manager destroyed mid-map fails its chunks with Stopped and no worker outlives it",
          "[process_pool][control]") {
  scale::Runtime runtime;
  std::vector<pid_t> workers;
  std::optional<scale::Future<std::vector<int>>> pending;
  {
    scale::ProcessPoolManager manager({.max_workers = 2});
    scale::Iterator<int> numbers(support::iota(8), manager);
    pending.emplace(numbers.map(spin_for_a_minute, {.chunk_size = 1}));
    REQUIRE(eventually([&] { return manager.stats().tasks_running >= 2 && manager.worker_pids().size() == 2; }));
    workers = manager.worker_pids();
  }
  CHECK(all_gone(workers));  // already reaped when the destructor returns
  REQUIRE_THROWS_AS(pending->get(), scale::Stopped);
}

// ----- Ctrl-C to an application (tests/control_app.cpp) --------------------------------------

namespace {

/// Starts control_app in `mode`, waits until its map runs, and returns the worker pids it printed.
std::vector<pid_t> start_running(support::ControlApp& app, const std::string& mode, const std::string& grace_ms) {
  // Orphans of the program are adopted by this test, so a worker that outlived it shows here.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  support::start_control_app(app, CONTROL_APP_BINARY, {mode, grace_ms});
  std::vector<pid_t> workers;
  auto running = app.line_with("running", 20s, [&](const std::string& line) {
    if (line.rfind("worker ", 0) == 0) workers.push_back(static_cast<pid_t>(std::stoi(line.substr(7))));
  });
  REQUIRE(running);
  REQUIRE(workers.size() == 2);
  return workers;
}

/// The program's wait status once it has exited, or nothing after `limit`.
/// This test's children still running (adopted orphans included; zombies do not count).
std::vector<pid_t> living_children() {
  std::vector<pid_t> living;
  for (pid_t child : support::children_of(::getpid()))
    if (!process_gone(child)) living.push_back(child);
  return living;
}

}  // namespace

TEST_CASE("Ctrl-C mid-map on a process pool: the program reports Cancelled, exits its own way, and its workers are "
          "gone within the grace and a second",
          "[process_pool][control][ctrl_c]") {
  const std::string mode = GENERATE("pool", "pool-ignoring-stop");
  CAPTURE(mode);
  constexpr auto grace = 300ms;
  support::ControlApp app;
  const std::vector<pid_t> workers = start_running(app, mode, std::to_string(grace.count()));

  const auto sent = Clock::now();
  REQUIRE(::kill(-app.pid, SIGINT) == 0);  // what a terminal does on Ctrl-C: the program's process group
  CHECK(eventually([&] { return all_gone(workers); }, grace + 1s, 5ms));
  INFO("within " << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - sent).count() << " ms");
  REQUIRE(app.line_with("cancelled", 10s, [](const std::string&) {}));
  const std::optional<int> status = app.wait_exit(10s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 3);
  // Its replacements too (the workers that ignored the stop were killed and replaced): nothing is left.
  CHECK(eventually([] { return living_children().empty(); }, 2s));
}

TEST_CASE("a second Ctrl-C ends the program at once with SIGINT and takes its workers with it",
          "[process_pool][control][ctrl_c]") {
  support::ControlApp app;
  // A grace far longer than the test: only the second signal can end the map.
  const std::vector<pid_t> workers = start_running(app, "pool-ignoring-stop", "60000");
  REQUIRE(::kill(-app.pid, SIGINT) == 0);
  // The Runtime says that it is stopping (and how to exit now) once it has the first signal.
  REQUIRE(app.line_with("send it again to exit now", 10s, [](const std::string&) {}));
  const auto sent = Clock::now();
  REQUIRE(::kill(-app.pid, SIGINT) == 0);
  const std::optional<int> status = app.wait_exit(2s);
  REQUIRE(status);
  CHECK(Clock::now() - sent < 2s);
  CHECK(WIFSIGNALED(*status));
  CHECK(WTERMSIG(*status) == SIGINT);
  CHECK(eventually([&] { return all_gone(workers); }, 1s, 5ms));
  CHECK(eventually([] { return living_children().empty(); }, 2s));
}

int main(int argc, char** argv) {
  // In a worker this serves tasks and never returns. In the parent the Runtime goes away again:
  // each test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
