// ProcessPoolManager with chunks of one item, where a worker's frames travel in batches: the
// frames one read brings are each handed to their own item, in the order they came, and a worker
// that dies with its last results still on their way has the item it ran blamed, not the one
// answered just before it.
//
// Workers are children of this very test executable. A worker spawned while
// SCALE_TEST_BATCHING_WORKER is set is a stand-in (serve_batching below) that answers every task
// frame one read brings with one write, a progress frame before each result and one for an
// already answered task after them; the others are real workers (main() builds the Runtime from
// argc/argv first: in a worker it serves tasks and never returns).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "process/child_process.hpp"
#include "process/crash_handler.hpp"
#include "process/task_control.hpp"
#include "process/worker_link.hpp"
#include "remote/build_fingerprint.hpp"
#include "remote/task_payload.hpp"
#include "sanitizers/deliberate_crash.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include <scale/detail/wire.hpp>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;

constexpr const char* batching_env = "SCALE_TEST_BATCHING_WORKER";  // its value: the log's path

// ----- the batching stand-in worker -----------------------------------------------------------

/// Appends `tasks` (how many task frames one read brought, all answered in one write) to the log.
void log_batch(const char* path, std::size_t tasks) {
  const int fd = ::open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const std::string line = std::to_string(tasks) + "\n";
  [[maybe_unused]] const ssize_t written = ::write(fd, line.data(), line.size());
  ::close(fd);
}

/// Serves tasks as a worker does, except that all the task frames one read brings are run and
/// answered together in one write (after waiting a few milliseconds for a second one, so that
/// pairs are common): progress(task, 0.5), result(task) for each, then progress for the first one
/// again, whose result is already in front of it. Exits when the link closes.
[[noreturn]] void serve_batching(const scale::detail::ChildLink& link, const char* log) {
  using namespace scale::detail;
  TaskControl control([](std::uint64_t, double) {});  // its own progress frames are not sent
  std::string out;
  encode_frame(out, FrameType::hello, 0, build_fingerprint());
  if (!send_all(link.fd, out)) std::_Exit(0);
  FrameReader reader;
  std::vector<Frame> tasks;
  std::string results;
  for (;;) {
    auto room = reader.prepare();
    const ssize_t n = ::read(link.fd, room.data(), room.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::_Exit(0);
    reader.commit(static_cast<std::size_t>(n));
    while (auto frame = reader.next()) {
      if (frame->type == FrameType::task) tasks.push_back(std::move(*frame));
      if (frame->type == FrameType::shutdown) std::_Exit(0);
    }
    if (tasks.size() == 1) {
      pollfd more{link.fd, POLLIN, 0};
      if (::poll(&more, 1, 5) > 0) continue;  // read it, then answer both
    }
    if (tasks.empty()) continue;
    out.clear();
    for (const Frame& task : tasks) {
      encode_frame(out, FrameType::progress, task.id, encode_progress_payload(0.5));
      control.begin(task.id);
      control.set_payload(task.payload);
      results.clear();
      const bool ok = run_task_payload(task.payload, nullptr, nullptr, results, &control);
      encode_frame(out, ok ? FrameType::result : FrameType::error, task.id, results);
    }
    encode_frame(out, FrameType::progress, tasks.front().id, encode_progress_payload(0.5));
    log_batch(log, tasks.size());
    tasks.clear();
    if (!send_all(link.fd, out)) std::_Exit(0);
  }
}

bool is_worker(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == scale::detail::worker_flag) return true;
  return false;
}

/// Workers spawned while it lives are batching stand-ins that log their batches to a fresh file.
class BatchingWorkers {
 public:
  BatchingWorkers() : m_log("/tmp/scale-batch-test-" + std::to_string(::getpid()) + ".log") {
    std::remove(m_log.c_str());
    ::setenv(batching_env, m_log.c_str(), 1);
  }
  ~BatchingWorkers() {
    ::unsetenv(batching_env);
    std::remove(m_log.c_str());
  }
  BatchingWorkers(const BatchingWorkers&) = delete;
  BatchingWorkers& operator=(const BatchingWorkers&) = delete;

  /// The most task frames one read brought a worker (each answered in one write).
  std::size_t largest_batch() const {
    std::ifstream in(m_log);
    std::size_t largest = 0;
    for (std::size_t tasks = 0; in >> tasks;) largest = std::max(largest, tasks);
    return largest;
  }

 private:
  std::string m_log;
};

// ----- the functions ----------------------------------------------------------------------

auto three_x_plus_one = [](int x) { return 3 * x + 1; };

auto abort_on_13 = [](int x) SCALE_TEST_DELIBERATE_CRASH {
  if (x == 13) std::abort();
  return x + 1;
};

auto slow_double = [](int x) {
  std::this_thread::sleep_for(200us);
  return 2 * x;
};

}  // namespace

TEST_CASE("results that come in one read each complete their own item, in order, with progress frames between them",
          "[process_pool]") {
  BatchingWorkers batching;  // first: the workers are spawned while it lives
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});
  scale::Iterator<int> numbers(support::iota(300), manager);
  const std::vector<int> result = numbers.map(three_x_plus_one, {.chunk_size = 1}).get();
  REQUIRE(result.size() == 300);
  for (int i = 0; i < 300; ++i) REQUIRE(result[static_cast<std::size_t>(i)] == 3 * i + 1);
  // The first two tasks waited for the worker's hello and went out in one write, so the worker
  // read both at once, and both results (with the progress frames) came back in one write.
  CHECK(batching.largest_batch() >= 2);
  const auto stats = manager.stats();
  CHECK(stats.tasks_done == 300);
  CHECK(stats.tasks_failed == 0);
  CHECK(stats.tasks_retried == 0);
  CHECK(stats.tasks_running == 0);
  // The pool is still usable, with larger chunks too.
  CHECK(numbers.map(three_x_plus_one, {.chunk_size = 7}).get()[299] == 898);
}

TEST_CASE("with chunks of one item, an item that crashes its worker is blamed with its capsule, not the item "
          "answered just before it",
          "[process_pool][crash_capsule]") {
  scale_test::CrashingChildren crashing_workers;  // first: outlives the runtime and its workers
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2, .min_workers = 2});
  scale::Iterator<int> numbers(support::iota(64), manager);
  try {
    numbers.map(abort_on_13, {.chunk_size = 1, .max_retries = 0}).get();
    FAIL("the map should have failed");
  } catch (const scale::WorkerLost& lost) {
    CHECK(lost.index() == 13);
    CHECK(lost.attempts() == 1);
    CHECK_THAT(lost.status(), Catch::Contains("SIGABRT"));
    REQUIRE(lost.capsule().has_value());
    CHECK(lost.capsule()->item_index == 13);
    CHECK(lost.capsule()->item == "13");
  }
  // The pool is still usable.
  const std::vector<int> again = numbers.map(three_x_plus_one, {.chunk_size = 1}).get();
  CHECK(again[63] == 190);
}

TEST_CASE("a worker killed with SIGKILL while chunks of one item are pipelined to it: every result is right",
          "[process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2, .min_workers = 2});
  scale::Iterator<int> numbers(support::iota(4000), manager);
  auto pending = numbers.map(slow_double, {.chunk_size = 1});  // about 0.4 s of work per worker
  REQUIRE(support::eventually([&] { return manager.stats().tasks_done >= 200; }));
  const pid_t victim = manager.worker_pids().front();
  REQUIRE(::kill(victim, SIGKILL) == 0);
  const std::vector<int> result = pending.get();
  REQUIRE(result.size() == 4000);
  for (int i = 0; i < 4000; ++i) REQUIRE(result[static_cast<std::size_t>(i)] == 2 * i);
  const auto stats = manager.stats();
  CHECK(stats.workers_lost == 1);
  CHECK(stats.tasks_retried >= 1);
  CHECK(stats.tasks_failed == 0);
}

int main(int argc, char** argv) {
  if (const char* log = std::getenv(batching_env); log != nullptr && is_worker(argc, argv))
    if (auto link = scale::detail::child_link()) serve_batching(*link, log);
  // In a worker this serves tasks and never returns. In the parent the Runtime goes away again:
  // each test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
