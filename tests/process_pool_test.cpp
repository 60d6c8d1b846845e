// ProcessPoolManager: workers are children of this very test executable. main() builds the
// Runtime from argc/argv first: in a worker it serves tasks and never returns, so a child never
// runs the test suite. In the parent the Runtime is then destroyed again, and every test case
// (and the Iterator behaviour suite included below) builds its own, one at a time.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

struct ProcessPoolFactory {
  static constexpr bool ships = true;  // values and functions cross a process boundary
  static std::unique_ptr<scale::ScalabilityManager> make() {
    return std::make_unique<scale::ProcessPoolManager>(scale::ProcessPoolOptions{.max_workers = 2, .min_workers = 1});
  }
};

#define SCALE_ITERATOR_FACTORIES ProcessPoolFactory
#define SCALE_ITERATOR_TAGS "[iterator][process_pool]"
#include "iterator_suite.hpp"
#include "affinity_suite.hpp"
#include "control_suite.hpp"
#define SCALE_ROUTING_MANAGERS scale::ProcessPoolManager
#include "routing_suite.hpp"
#include "sanitizers/deliberate_crash.hpp"
#include "support/eventually.hpp"
#include "support/marker_file.hpp"
#include "support/processes.hpp"
#include "support/redis_server.hpp"

#include "redis/redis_client.hpp"
#include <scale/detail/task_registry.hpp>
#include "remote/build_fingerprint.hpp"

namespace {

using namespace std::chrono_literals;
using support::children_of;
using support::eventually;
using support::process_gone;

// The canonical program's function: captures nothing, reads the multiplier through the scope.
auto times_multiplier = [](int number, scale::Scope& scope) -> scale::Future<int> {
  int multiplier = co_await scope.get<int>("multiplier");
  co_return number* multiplier;
};

auto slow_square = [](int x) {
  std::this_thread::sleep_for(100us);
  return x * x;
};

auto abort_on_4321 = [](int x) SCALE_TEST_DELIBERATE_CRASH {
  if (x == 4321) std::abort();
  return x + 1;
};

auto hang_on_7 = [](int x) {
  if (x == 7) std::this_thread::sleep_for(1h);
  return x;
};

struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

auto throw_on_5 = [](int x) {
  if (x == 5) throw BadInput("five is not allowed");
  return x;
};

// Item 0 fails soon; item 1 answers long after, when its call has already failed.
auto fail_0_then_answer_1_late = [](int x) {
  if (x == 0) {
    std::this_thread::sleep_for(50ms);
    throw BadInput("zero fails");
  }
  std::this_thread::sleep_for(500ms);
  return x;
};

auto my_pid = [](int) { return static_cast<int>(::getpid()); };

/// The file block_once() makes in the first child that reaches it (named by the test's pid, the
/// children's parent).
std::filesystem::path block_once_marker(int test_pid) { return support::marker_file("pool-test-blocked", test_pid); }
/// In a child: blocks for a minute the first time a child of this test gets here (a rerun finds
/// the marker and goes on).
void block_once() {
  const std::filesystem::path marker = block_once_marker(static_cast<int>(::getppid()));
  if (support::marker_exists(marker)) return;
  support::touch_marker(marker);
  std::this_thread::sleep_for(std::chrono::seconds(60));
}
/// Twice x; item 300 blocks for a minute the first time it runs.
auto block_once_at_300 = [](int x) {
  if (x == 300) block_once();
  return 2 * x;
};
auto sleep_20ms = [](int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return x;
};

int add_one(int x) { return x + 1; }

/// A type with no JSON conversion and not trivially copyable.
struct Opaque {
  std::string text;
};

auto opaque_length = [](Opaque o) { return o.text.size(); };

auto count_and_emit = [](int x, scale::Scope& scope) -> scale::Future<int> {
  co_await scope.increment("count", 1);
  co_await scope.emit("item", x);
  co_return x;
};

std::size_t open_fds() {
  std::size_t count = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (auto* entry = ::readdir(dir))
      if (entry->d_name[0] != '.') ++count;
    ::closedir(dir);
  }
  return count;
}

std::vector<pid_t> children_of_self() { return children_of(::getpid()); }

}  // namespace

TEST_CASE("the canonical program's map runs in child processes and reads the parent's memory", "[process_pool]") {
  scale::Runtime runtime;
  int code = runtime.run([]() -> scale::Future<int> {
    scale::SharedMemory memory;
    scale::SharedEventEmitter events;
    scale::ProcessPoolManager manager;
    scale::Iterator<int> numbers({1, 2, 3, 4, 5}, manager);
    numbers.use_scope(memory);

    co_await memory.set("multiplier", 10);
    std::vector<int> result = co_await numbers.map(times_multiplier);
    for (int i = 0; i < 5; ++i) REQUIRE(result[static_cast<std::size_t>(i)] == (i + 1) * 10);
    co_await events.emit("success!");
    REQUIRE(manager.stats().workers_spawned >= 1);
    co_return 0;
  });
  REQUIRE(code == 0);
}

TEST_CASE("work runs in other processes, and scope writes and emits reach the parent", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::SharedMemory memory;
  scale::SharedEventEmitter events;
  std::atomic<int> emitted{0};
  auto subscription = events.on("item", [&](const nlohmann::json&) { ++emitted; });
  subscription.ready().get();
  scale::Iterator<int> numbers(iterator_suite::iota(100), manager);
  numbers.use_scope(memory, events);
  std::vector<int> pids = numbers.map(my_pid, {.chunk_size = 10}).get();
  for (int pid : pids) REQUIRE(pid != ::getpid());
  REQUIRE(numbers.map(count_and_emit).get().size() == 100);
  REQUIRE(memory.get<int>("count").get() == 100);
  REQUIRE(eventually([&] { return emitted.load() == 100; }));
  REQUIRE(numbers.map(scale::fn<&add_one>).get()[99] == 100);
}

TEST_CASE("a child killed with kill -9 mid-map has its chunk rerun: all 10,000 results, in order", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::Iterator<int> numbers(iterator_suite::iota(10'000), manager);
  auto pending = numbers.map(slow_square);  // about 0.5 s of work per worker
  REQUIRE(eventually([&] { return !manager.worker_pids().empty() && manager.stats().tasks_running > 0; }));
  std::this_thread::sleep_for(100ms);
  const pid_t victim = manager.worker_pids().front();
  REQUIRE(::kill(victim, SIGKILL) == 0);
  std::vector<int> result = pending.get();
  REQUIRE(result.size() == 10'000);
  for (int i = 0; i < 10'000; ++i) REQUIRE(result[static_cast<std::size_t>(i)] == i * i);
  auto stats = manager.stats();
  REQUIRE(stats.workers_lost >= 1);
  REQUIRE(stats.tasks_retried >= 1);
  REQUIRE(stats.tasks_failed == 0);
}

TEST_CASE("a child killed while chunks are queued behind its running one gives them back: every result comes "
          "once, in order",
          "[process_pool]") {
  scale::Runtime runtime;
  const std::filesystem::path marker = block_once_marker(static_cast<int>(::getpid()));
  support::remove_marker(marker);
  scale::ProcessPoolManager manager({.max_workers = 1});
  scale::Iterator<int> numbers(iterator_suite::iota(1000), manager);
  auto pending = numbers.map(block_once_at_300, {.chunk_size = 1});
  // Item 300 blocks; the child holds it and those queued behind it in its link: up to 32, as the
  // chunks before it ran briefly, unless a hiccup of the machine made one look long (at least 2).
  REQUIRE(eventually([&] { return support::marker_exists(marker) && manager.stats().tasks_running >= 2; }));
  const std::size_t held = manager.stats().tasks_running;
  const pid_t victim = manager.worker_pids().front();
  REQUIRE(::kill(victim, SIGKILL) == 0);
  std::vector<int> result = pending.get();
  support::remove_marker(marker);
  REQUIRE(result.size() == 1000);
  bool right = true;
  for (int i = 0; i < 1000; ++i) right = right && result[static_cast<std::size_t>(i)] == 2 * i;
  REQUIRE(right);
  const auto stats = manager.stats();
  REQUIRE(stats.tasks_done == 1000);  // one result accepted per chunk: the queued ones never ran twice
  REQUIRE(stats.tasks_retried >= held);  // the chunk it ran, and the ones behind it back to the queue
  REQUIRE(stats.workers_lost == 1);
  REQUIRE(stats.tasks_failed == 0);
}

namespace {
/// The length of the string; the one starting with 'B' blocks for a minute the first time it runs.
auto length_blocking_at_b = [](const std::string& text) {
  if (!text.empty() && text[0] == 'B') block_once();
  return text.size();
};
}  // namespace

TEST_CASE("the task frames queued behind a child's running task stay within 64 KiB together, with the window deep",
          "[process_pool]") {
  scale::Runtime runtime;
  const std::filesystem::path marker = block_once_marker(static_cast<int>(::getpid()));
  scale::ProcessPoolManager manager({.max_workers = 1});
  scale::Iterator<int> small(iterator_suite::iota(200), manager);
  // Items of 4,000 bytes, one per chunk: 16 frames fit behind the running one (with up to 96 bytes
  // of frame each), 15 with up to 368: either way fewer than the deep window's 31, so 64 KiB is
  // what stops the pump. The first item blocks its chunk, so no result comes back and what the child
  // holds stops changing once the pump has filled it.
  constexpr std::size_t item_bytes = 4'000;
  std::vector<std::string> texts(400, std::string(item_bytes, 'x'));
  texts[0][0] = 'B';
  scale::Iterator<std::string> big(texts, manager);
  constexpr std::size_t bound = 64 * 1024;
  // The bound only shows while the window is deep (32 chunks per worker). The small calls deepen
  // it (a hiccup of a loaded machine can make one of their chunks look long, so a few of them), and
  // since the big call's first item blocks, no result comes back after them to end it. (A blocking
  // item further on left its chunks before it to end the window under ASan beside other tests.)
  support::remove_marker(marker);
  for (int call = 0; call < 50 && manager.chunks_in_flight(1) != 32; ++call)
    REQUIRE(small.map(iterator_suite::twice, {.chunk_size = 1}).get().size() == 200);
  REQUIRE(manager.chunks_in_flight(1) == 32);
  const std::size_t done_before = manager.stats().tasks_done;
  auto pending = big.map(length_blocking_at_b, {.chunk_size = 1});
  // Full: the frames behind the running one leave no room for one more of theirs (all have one size).
  auto full = [](const scale::ProcessPoolManager::Holdings::Child& child) {
    return child.tasks >= 2 && child.bytes_behind + child.bytes_behind / (child.tasks - 1) > bound;
  };
  // The child blocked on the first item; the pumps of the chunks the call submits fill it up.
  scale::ProcessPoolManager::Holdings::Child child;
  REQUIRE(eventually([&] {
    const auto held = manager.holdings();
    if (held.children.size() != 1 || !support::marker_exists(marker)) return false;
    child = held.children.front();
    return full(child);
  }));
  // Blocked, it answers nothing: no pump may send it more, however many chunks wait in the queue.
  for (int look = 0; look < 20; ++look) {
    const auto held = manager.holdings();
    REQUIRE(held.tasks_done == done_before);
    REQUIRE(held.children.size() == 1);
    REQUIRE(held.children.front().tasks == child.tasks);
    REQUIRE(manager.stats().tasks_queued > 0);
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(manager.chunks_in_flight(1) == 32);
  REQUIRE(child.bytes_behind <= bound);
  REQUIRE(child.bytes_behind >= (child.tasks - 1) * item_bytes);
  REQUIRE(child.tasks - 1 < 31);  // fewer than the window allows: the bytes stopped the pump
  // Every result still comes: the child is killed, its chunks run again on a new one.
  REQUIRE(::kill(child.pid, SIGKILL) == 0);
  std::vector<std::size_t> lengths = pending.get();
  support::remove_marker(marker);
  REQUIRE(lengths.size() == texts.size());
  REQUIRE(std::all_of(lengths.begin(), lengths.end(), [&](std::size_t n) { return n == item_bytes; }));
}

TEST_CASE("a pool keeps 32 chunks per worker in flight only while its chunks are short, of the call's own size "
          "or of a few items",
          "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  REQUIRE(manager.chunks_in_flight(2) == 4);  // nothing has run yet
  scale::Iterator<int> numbers(iterator_suite::iota(200), manager);
  // Short chunks deepen it. A hiccup of a loaded machine (a sanitizer build, a busy CI runner) can
  // make one chunk look long and end it until the smoothed time falls again: so "within a few calls".
  auto deep_within_a_few = [&](scale::RunOptions options) {
    for (int call = 0; call < 50; ++call) {
      REQUIRE(numbers.map(iterator_suite::twice, options).get().size() == 200);
      if (manager.chunks_in_flight(2) == 64) return true;
    }
    return false;
  };
  REQUIRE(deep_within_a_few({.chunk_size = 1}));
  // One long chunk ends it at once.
  scale::Iterator<int> three(iterator_suite::iota(3), manager);
  REQUIRE(three.map(sleep_20ms, {.chunk_size = 1}).get().size() == 3);
  REQUIRE(manager.chunks_in_flight(2) == 4);
  REQUIRE(deep_within_a_few({.chunk_size = 1}));  // short again
  // Chunks of 100 items: the call chose that size, so they deepen it too (an automatic size's
  // chunks of as many items never do, below).
  REQUIRE(deep_within_a_few({.chunk_size = 100}));
  // Short, but chunks of many items cut by the automatic size (probes of 64 items, then more): a
  // deeper window would only cut more probes.
  scale::Iterator<int> many(iterator_suite::iota(20'000), manager);
  REQUIRE(many.map(iterator_suite::twice).get().size() == 20'000);
  REQUIRE(manager.chunks_in_flight(2) == 4);
}

TEST_CASE("an item that aborts its worker every time fails the call with WorkerLost naming that item",
          "[process_pool]") {
  scale_test::CrashingChildren crashing_workers;  // first: outlives the runtime and its workers
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::Iterator<int> numbers(iterator_suite::iota(10'000), manager);
  const auto started = std::chrono::steady_clock::now();
  try {
    numbers.map(abort_on_4321).get();
    FAIL("the map should have failed");
  } catch (const scale::WorkerLost& lost) {
    CHECK(lost.index() == 4321);
    CHECK(lost.attempts() == 4);  // the first run and max_retries (3) reruns
    CHECK_THAT(lost.status(), Catch::Contains("SIGABRT"));
    CHECK_THAT(std::string(lost.what()), Catch::Contains("item 4321"));
  }
  CHECK(std::chrono::steady_clock::now() - started < 10s);
  // The pool is still usable.
  REQUIRE(numbers.map(slow_square, {.chunk_size = 5000}).get()[3] == 9);
}

TEST_CASE("a hung item with a timeout fails the call instead of hanging", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::Iterator<int> numbers(iterator_suite::iota(10), manager);
  const auto started = std::chrono::steady_clock::now();
  scale::RunOptions options{.chunk_size = 1, .max_retries = 1, .timeout = 200ms};
  try {
    numbers.map(hang_on_7, options).get();
    FAIL("the map should have failed");
  } catch (const scale::WorkerLost& lost) {
    CHECK(lost.index() == 7);
    CHECK_THAT(lost.status(), Catch::Contains("timed out after 200 ms") && Catch::Contains("SIGKILL"));
  }
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  // The pool is still usable.
  REQUIRE(numbers.map(iterator_suite::twice).get()[9] == 18);
}

TEST_CASE("an exception in a worker arrives as RemoteError with its type, and the pool stays usable",
          "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::Iterator<int> numbers(iterator_suite::iota(20), manager);
  try {
    numbers.map(throw_on_5, {.chunk_size = 4}).get();
    FAIL("the map should have failed");
  } catch (const scale::RemoteError& error) {
    CHECK_THAT(error.type_name(), Catch::Contains("BadInput"));
    CHECK(error.message() == "five is not allowed");
  }
  CHECK(manager.stats().tasks_retried == 0);
  CHECK(manager.stats().workers_lost == 0);
  REQUIRE(numbers.map(iterator_suite::twice).get()[19] == 38);
}

TEST_CASE("a result that arrives after its call failed is not accepted: the chunk counts as skipped",
          "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2, .min_workers = 2});
  scale::Iterator<int> numbers({0, 1}, manager);
  // Both workers ready, so both chunks are on their way before the first one fails.
  REQUIRE(numbers.map(iterator_suite::twice, {.chunk_size = 1}).get() == std::vector<int>{0, 2});
  const auto before = manager.stats();
  try {
    numbers.map(fail_0_then_answer_1_late, {.chunk_size = 1}).get();
    FAIL("the map should have failed");
  } catch (const scale::RemoteError& error) {
    CHECK(error.message() == "zero fails");
  }
  const auto after = manager.stats();
  CHECK(after.tasks_done == before.tasks_done);  // item 1's late result was dropped, not accepted
  CHECK(after.tasks_failed == before.tasks_failed + 2);
  CHECK(after.tasks_retried == before.tasks_retried);
}

TEST_CASE("a capturing lambda fails at once with an Error that says to capture nothing", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::Iterator<int> numbers(iterator_suite::iota(20), manager);
  int offset = 3;
  auto captures = [offset](int x) { return x + offset; };
  REQUIRE_THROWS_WITH(numbers.map(captures).get(), Catch::Contains("capture nothing") && Catch::Contains("scope"));
  REQUIRE_THROWS_AS(numbers.for_each(captures).get(), scale::Error);
  REQUIRE_THROWS_WITH(numbers.map(&add_one).get(), Catch::Contains("scale::fn<&"));
  REQUIRE(manager.stats().workers_spawned == 0);  // nothing was sent anywhere
  // The thread tiers take the same lambda.
  scale::ThreadPoolManager threads(2);
  scale::Iterator<int> on_threads(iterator_suite::iota(20), threads);
  REQUIRE(on_threads.map(captures).get()[0] == 3);
}

TEST_CASE("a value type without to_json fails at once with an Error that says to add it", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  std::vector<Opaque> items{{"a"}, {"bb"}};
  scale::Iterator<Opaque> opaque(items, manager);
  REQUIRE_THROWS_WITH(opaque.map(opaque_length).get(), Catch::Contains("to_json"));
  REQUIRE(manager.stats().workers_spawned == 0);
}

TEST_CASE("100 maps in a row leak no descriptors and leave no zombie children", "[process_pool]") {
  scale::Runtime runtime;
  {
    // The first pool starts the process-wide spawner thread, which keeps its own descriptors.
    scale::ProcessPoolManager manager({.max_workers = 1});
    scale::Iterator<int> numbers(iterator_suite::iota(10), manager);
    numbers.map(iterator_suite::twice).get();
  }
  REQUIRE(eventually([] { return children_of_self().empty(); }));
  // The spawner closes a reaped child's pidfd on its own thread, a moment after the reap.
  std::this_thread::sleep_for(100ms);
  const std::size_t fds_before = open_fds();
  for (int round = 0; round < 100; ++round) {
    scale::ProcessPoolManager manager({.max_workers = 2});
    scale::Iterator<int> numbers(iterator_suite::iota(100), manager);
    REQUIRE(numbers.map(iterator_suite::twice).get()[99] == 198);
  }
  REQUIRE(eventually([] { return children_of_self().empty(); }));
  CHECK(eventually([&] { return open_fds() <= fds_before; }));
  INFO("descriptors before: " << fds_before << ", after: " << open_fds());
  REQUIRE(open_fds() <= fds_before);
}

TEST_CASE("stats report workers and tasks: idle workers exit after idle_timeout", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2, .idle_timeout = 300ms});
  REQUIRE(manager.stats().workers_alive == 0);  // spawned on demand only
  scale::Iterator<int> numbers(iterator_suite::iota(1000), manager);
  REQUIRE(numbers.map(slow_square, {.chunk_size = 100}).get()[10] == 100);
  auto stats = manager.stats();
  CHECK(stats.workers_spawned == 2);
  CHECK(stats.workers_alive == 2);
  CHECK(stats.tasks_done == 10);
  CHECK(stats.tasks_queued == 0);
  CHECK(stats.tasks_running == 0);
  CHECK(stats.tasks_failed == 0);
  CHECK(stats.tasks_retried == 0);
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 0; }));
  CHECK(manager.stats().workers_lost == 0);
  // New work spawns again.
  REQUIRE(numbers.map(iterator_suite::twice).get()[1] == 2);
}

TEST_CASE("min_workers are started with the manager and kept through idle_timeout", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2, .min_workers = 1, .idle_timeout = 100ms});
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  scale::Iterator<int> numbers(iterator_suite::iota(1000), manager);
  numbers.map(slow_square, {.chunk_size = 100}).get();
  REQUIRE(eventually([&] { return manager.stats().workers_alive == 1; }));
  std::this_thread::sleep_for(300ms);
  CHECK(manager.stats().workers_alive == 1);
}

TEST_CASE("large chunks travel both ways while the next chunk is already on its way", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::SharedMemory memory;
  memory.set("multiplier", 3).get();
  scale::Iterator<int> numbers(iterator_suite::iota(1'000'000), manager);
  numbers.use_scope(memory);
  std::vector<int> doubled = numbers.map(iterator_suite::twice).get();  // chunks of 125,000 ints
  REQUIRE(doubled.size() == 1'000'000);
  REQUIRE(doubled[999'999] == 1'999'998);
  std::vector<std::string> words(20'000, std::string(100, 'x'));
  scale::Iterator<std::string> strings(words, manager);
  REQUIRE(strings.map(iterator_suite::exclaim).get()[19'999].size() == 101);
  scale::Iterator<int> some(iterator_suite::iota(20'000), manager);
  some.use_scope(memory);
  std::vector<int> tripled = some.map(times_multiplier).get();  // a scope round trip per item
  REQUIRE(tripled[19'999] == 59'997);
  REQUIRE(manager.stats().tasks_failed == 0);
}

TEST_CASE("workers run in a process group of their own, so a Ctrl-C reaches only the parent", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2, .min_workers = 2});
  auto pids = manager.worker_pids();
  REQUIRE(pids.size() == 2);
  for (pid_t pid : pids) {
    CHECK(::getpgid(pid) == pid);
    CHECK(::getpgid(pid) != ::getpgrp());
  }
}

TEST_CASE("a worker of another build is refused with a clear error", "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});
  // The manager's fingerprint is taken; a worker spawned from now on computes another one.
  ::setenv("SCALE_FINGERPRINT_SALT", "another build", 1);
  scale::Iterator<int> numbers(iterator_suite::iota(10), manager);
  auto pending = numbers.map(iterator_suite::twice);
  REQUIRE(eventually([&] { return manager.stats().workers_spawned == 1; }));  // it took the environment
  ::unsetenv("SCALE_FINGERPRINT_SALT");
  REQUIRE_THROWS_WITH(pending.get(), Catch::Contains("different build"));
  REQUIRE_THROWS_WITH(numbers.map(iterator_suite::twice).get(), Catch::Contains("different build"));
  scale::ProcessPoolManager fresh({.max_workers = 1});
  scale::Iterator<int> again(iterator_suite::iota(10), fresh);
  REQUIRE(again.map(iterator_suite::twice).get()[9] == 18);
}

TEST_CASE("a copy of the executable with another modification time has the same fingerprint", "[process_pool]") {
  // A worker on another server runs a copy of the executable: the build id, not the file's
  // dates, must decide.
  std::string copy = "/tmp/scale-fingerprint-copy-" + std::to_string(::getpid());
  {
    std::ifstream in("/proc/self/exe", std::ios::binary);
    std::ofstream out(copy, std::ios::binary);
    out << in.rdbuf();
  }
  REQUIRE(::chmod(copy.c_str(), 0700) == 0);
  timespec times[2] = {{1'000'000, 0}, {1'000'000, 0}};
  REQUIRE(::utimensat(AT_FDCWD, copy.c_str(), times, 0) == 0);
  std::string printed;
  if (FILE* pipe = ::popen((copy + " --print-fingerprint").c_str(), "r")) {
    char line[128] = {};
    if (std::fgets(line, sizeof line, pipe)) printed = line;
    ::pclose(pipe);
  }
  std::remove(copy.c_str());
  if (!printed.empty() && printed.back() == '\n') printed.pop_back();
  REQUIRE(printed == scale::detail::build_fingerprint());
}

TEST_CASE("helper: a long map for the Ctrl-C test", "[.][ctrl_c_helper]") {
  // SIGINT as a user's program has it: Catch2 installs a handler of its own for the session,
  // which reports from inside the signal (allocating there, which TSan rightly refuses).
  std::signal(SIGINT, SIG_DFL);
  // A program that leaves SIGINT to itself (the Runtime's own handling is what
  // process_pool_control_test's Ctrl-C tests run, through tests/control_app.cpp).
  scale::Runtime runtime({.handle_signals = false});
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::Iterator<int> numbers(iterator_suite::iota(1'000'000), manager);
  numbers.map(slow_square, {.chunk_size = 10}).get();  // far longer than the test waits
}

/// Redis's count of open client connections.
static int redis_clients(scale::detail::RedisClient& client) {
  auto info = client.command({"INFO", "clients"}).get().str;
  auto at = info.find("connected_clients:");
  return at == std::string::npos ? -1 : std::stoi(info.substr(at + 18));
}

TEST_CASE("a worker opens a redis:// memory itself and its scope calls reach the same store", "[process_pool][redis]") {
  scale::Runtime runtime;
  auto& redis = support::RedisServer::shared();
  scale::SharedMemory memory(redis.url() + "?namespace=" + support::RedisServer::fresh_namespace());
  memory.set("multiplier", 7).get();
  scale::detail::RedisClient client(scale::detail::parse_redis_url(redis.url()));
  const int clients_before = redis_clients(client);

  scale::ProcessPoolManager manager({.max_workers = 2, .min_workers = 2});
  scale::Iterator<int> numbers(iterator_suite::iota(200), manager);
  numbers.use_scope(memory);
  auto result = numbers.map_with_workers(times_multiplier).get();
  std::set<std::string> ran_items;
  for (int i = 0; i < 200; ++i) {
    REQUIRE(result[i].value == i * 7);
    ran_items.insert(result[i].worker);
  }
  // Each worker that ran items connected to Redis on its own (the workers stay up: min_workers).
  // NOTE: a loaded machine may let the first child run every chunk before the second is up.
  REQUIRE_FALSE(ran_items.empty());
  REQUIRE(redis_clients(client) >= clients_before + static_cast<int>(ran_items.size()));
  REQUIRE(manager.stats().workers_spawned == 2);
}

/// Starts this executable running the long map above in a process group of its own (as a
/// program started from a shell is) and returns its pid once it has its two workers.
static pid_t start_long_map(std::vector<pid_t>& workers) {
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  std::string exe = "/proc/self/exe", filter = "[ctrl_c_helper]";
  char* arguments[] = {exe.data(), filter.data(), nullptr};
  pid_t helper = -1;
  REQUIRE(posix_spawn(&helper, exe.c_str(), &actions, &attributes, arguments, environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  REQUIRE(eventually([&] { return (workers = children_of(helper)).size() == 2; }));
  std::this_thread::sleep_for(200ms);
  return helper;
}

/// True once `pid` has exited (gone, or a zombie waiting for a parent that is itself gone).
TEST_CASE("without the Runtime's signal handling, a Ctrl-C to the process group ends the parent and its workers and "
          "respawns none",
          "[process_pool]") {
  std::vector<pid_t> workers;
  pid_t helper = start_long_map(workers);
  REQUIRE(::kill(-helper, SIGINT) == 0);  // what the terminal does on Ctrl-C

  int status = 0;
  REQUIRE(::waitpid(helper, &status, 0) == helper);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGINT);
  // PR_SET_PDEATHSIG ends the workers with their parent; none was replaced before it died.
  CHECK(eventually([&] { return std::all_of(workers.begin(), workers.end(), process_gone); }, 2000ms));
}

TEST_CASE("workers die within two seconds when their parent is killed with kill -9", "[process_pool]") {
  std::vector<pid_t> workers;
  pid_t helper = start_long_map(workers);
  REQUIRE(::kill(helper, SIGKILL) == 0);  // the parent alone: nothing reaches the workers directly

  int status = 0;
  REQUIRE(::waitpid(helper, &status, 0) == helper);
  CHECK(WIFSIGNALED(status));
  CHECK(eventually([&] { return std::all_of(workers.begin(), workers.end(), process_gone); }, 2000ms));
}

int main(int argc, char** argv) {
  // In a worker this serves tasks and never returns. In the parent the Runtime goes away again:
  // each test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  if (argc == 2 && std::string(argv[1]) == "--print-fingerprint") {
    std::printf("%s\n", scale::detail::build_fingerprint().c_str());
    return 0;
  }
  return Catch::Session().run(argc, argv);
}
