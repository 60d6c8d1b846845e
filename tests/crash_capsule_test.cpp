// The crash capsule on a ProcessPoolManager: workers (children of this very test executable) that
// die of a signal in an item leave the WorkerLost a capsule with the item, its value, the signal
// and a stack naming the function; a worker that dies otherwise leaves none. main() builds the
// Runtime from argc/argv first: in a worker it serves tasks and never returns.
//
// The crashing functions are free functions with distinctive names, never inlined, marked so that
// no sanitizer instruments them (UBSan would report the null store itself and abort instead), and
// they crash through volatile objects the compiler cannot see through. No test here turns the
// sanitizers' own signal handlers off in the workers: the worker's handler must win over them.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "remote/wire_error.hpp"
#include "sanitizers/deliberate_crash.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;

// ----- the crashing functions -------------------------------------------------------------

volatile int* volatile g_nowhere = nullptr;  // the compiler cannot know it is null
volatile int g_never = -1;                   // no depth reaches it, but the compiler cannot know

[[gnu::noinline]] SCALE_TEST_DELIBERATE_CRASH int crash_capsule_null_write(int x) {
  if (x == 4321) *g_nowhere = x;
  return x + 1;
}

[[gnu::noinline]] SCALE_TEST_DELIBERATE_CRASH int crash_capsule_recurse(int depth) {
  volatile char frame[512];
  frame[0] = static_cast<char>(depth);
  if (depth == g_never) return frame[0];
  return crash_capsule_recurse(depth + 1) + frame[0];  // not a tail call: the frames pile up
}

[[gnu::noinline]] SCALE_TEST_DELIBERATE_CRASH void crash_capsule_abort(int x) {
  if (x == 3) std::abort();
}

struct Parcel {
  int id = 0;
  std::string label;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Parcel, id, label)

[[gnu::noinline]] SCALE_TEST_DELIBERATE_CRASH int crash_capsule_open_parcel(const Parcel& parcel) {
  if (parcel.label == "fragile") *g_nowhere = parcel.id;
  return parcel.id;
}

auto null_write_on_4321 = [](int x) { return crash_capsule_null_write(x); };
auto overflow_on_5 = [](int x) { return x == 5 ? crash_capsule_recurse(0) : x; };
auto abort_on_3 = [](int x) {
  crash_capsule_abort(x);
  return x;
};
auto open_parcel = [](const Parcel& parcel) { return crash_capsule_open_parcel(parcel); };
auto exit_on_2 = [](int x) {
  if (x == 2) std::_Exit(3);
  return x;
};
/// Writes this worker's pid to the file the item names, then waits to be killed.
auto wait_to_be_killed = [](const std::string& path) {
  {
    std::ofstream(path + ".tmp") << ::getpid();
  }
  std::filesystem::rename(path + ".tmp", path);
  std::this_thread::sleep_for(1h);
  return 0;
};

// ----- helpers ----------------------------------------------------------------------------

/// One item a chunk, no rerun: each test's crash happens once, and fails the call at once.
const scale::RunOptions once{.chunk_size = 1, .max_retries = 0};

std::string this_host() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

bool mentions(const std::string& line, const std::string& part) { return line.find(part) != std::string::npos; }

/// The index of the first frame naming `function`, or the stack's size.
std::size_t frame_naming(const std::vector<std::string>& stack, const std::string& function) {
  return static_cast<std::size_t>(
      std::find_if(stack.begin(), stack.end(), [&](const std::string& line) { return mentions(line, function); }) -
      stack.begin());
}

/// None of the handler's own frames is left in the stack.
void check_no_handler_frames(const std::vector<std::string>& stack) {
  for (const std::string& line : stack) {
    INFO(line);
    CHECK_FALSE(mentions(line, "on_crash_signal"));
    CHECK_FALSE(mentions(line, "boost::stacktrace"));
    CHECK_FALSE(mentions(line, "__restore_rt"));
  }
}

/// The capsule's stack, for a failed check's message.
std::string stack_text(const std::vector<std::string>& stack) {
  std::string text;
  for (const std::string& line : stack) text += "  " + line + "\n";
  return text;
}

template <class Call>
scale::WorkerLost expect_worker_lost(Call call) {
  try {
    call();
  } catch (const scale::WorkerLost& lost) {
    return lost;
  }
  FAIL("the map should have failed with scale::WorkerLost");
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("a null-pointer write in item 4321 gives a WorkerLost whose capsule names the item, its value, SIGSEGV "
          "and the function",
          "[crash_capsule][process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 2});
  scale::Iterator<int> numbers(support::iota(10'000), manager);
  const auto started = std::chrono::steady_clock::now();
  const scale::WorkerLost lost = expect_worker_lost([&] { numbers.map(null_write_on_4321).get(); });
  // The rerun-and-split that names the one bad item is as it was; the capsule is its last crash's.
  CHECK(lost.index() == 4321);
  CHECK(lost.attempts() == 4);
  CHECK_THAT(lost.status(), Catch::Contains("SIGSEGV"));
  REQUIRE(lost.capsule().has_value());
  const scale::CrashReport& capsule = *lost.capsule();
  CHECK(capsule.item_index == 4321);
  CHECK(capsule.item == "4321");
  CHECK(capsule.signal == SIGSEGV);
  CHECK(capsule.signal_name == "SIGSEGV");
  CHECK(capsule.pid > 0);
  CHECK(capsule.pid != ::getpid());
  CHECK(capsule.host == this_host());
  INFO(stack_text(capsule.stack));
  // Innermost first: the handler's frames are gone, the user's function is the first frame, with
  // its file and line (with debug information), and the map's machinery is further out.
  REQUIRE_FALSE(capsule.stack.empty());
  CHECK(mentions(capsule.stack[0], "crash_capsule_null_write"));
#ifdef SCALE_TEST_DEBUG_INFO
  CHECK(mentions(capsule.stack[0], " at "));
  CHECK(mentions(capsule.stack[0], "crash_capsule_test.cpp:"));
#endif
  CHECK(frame_naming(capsule.stack, "MapJob") < capsule.stack.size());
  check_no_handler_frames(capsule.stack);
  CHECK_THAT(std::string(lost.what()), Catch::Contains("SIGSEGV in item 4321 = 4321") &&
                                           Catch::Contains("crash_capsule_null_write"));
  std::printf("--- the capsule of a null-pointer write, as WorkerLost::what() shows it ---\n%s\n---\n", lost.what());
  CHECK(std::chrono::steady_clock::now() - started < 30s);
  // The pool is still usable.
  CHECK(numbers.map([](int x) { return x * 2; }, {.chunk_size = 5000}).get()[21] == 42);
}

TEST_CASE("the capsule of an item that is a struct with to_json holds its JSON", "[crash_capsule][process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});
  scale::Iterator<Parcel> parcels(std::vector<Parcel>{{1, "sturdy"}, {2, "sturdy"}, {7, "fragile"}, {8, "sturdy"}},
                                  manager);
  const scale::WorkerLost lost = expect_worker_lost([&] { parcels.map(open_parcel, once).get(); });
  REQUIRE(lost.capsule().has_value());
  CHECK(lost.capsule()->item_index == 2);
  CHECK(lost.capsule()->item == R"({"id":7,"label":"fragile"})");
  CHECK(lost.capsule()->signal_name == "SIGSEGV");
  INFO(stack_text(lost.capsule()->stack));
  CHECK(frame_naming(lost.capsule()->stack, "crash_capsule_open_parcel") == 0);
}

TEST_CASE("a stack overflow by deep recursion gives a capsule", "[crash_capsule][process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});
  scale::Iterator<int> numbers(support::iota(8), manager);
  const scale::WorkerLost lost = expect_worker_lost([&] { numbers.map(overflow_on_5, once).get(); });
  CHECK_THAT(lost.status(), Catch::Contains("SIGSEGV"));
  REQUIRE(lost.capsule().has_value());
  const scale::CrashReport& capsule = *lost.capsule();
  CHECK(capsule.signal_name == "SIGSEGV");
  CHECK(capsule.item_index == 5);
  CHECK(capsule.item == "5");
  INFO(stack_text(capsule.stack));
  // The innermost frames, every one of them the recursion.
  REQUIRE(capsule.stack.size() >= 16);
  CHECK(std::all_of(capsule.stack.begin(), capsule.stack.begin() + 16,
                    [](const std::string& line) { return mentions(line, "crash_capsule_recurse"); }));
}

TEST_CASE("abort() in an item gives a capsule with SIGABRT", "[crash_capsule][process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});
  scale::Iterator<int> numbers(support::iota(6), manager);
  const scale::WorkerLost lost = expect_worker_lost([&] { numbers.map(abort_on_3, once).get(); });
  REQUIRE(lost.capsule().has_value());
  const scale::CrashReport& capsule = *lost.capsule();
  CHECK(capsule.signal == SIGABRT);
  CHECK(capsule.signal_name == "SIGABRT");
  CHECK(capsule.item_index == 3);
  INFO(stack_text(capsule.stack));
  // abort() and the C library's raising of the signal come first, then the function that called it.
  const std::size_t user = frame_naming(capsule.stack, "crash_capsule_abort");
  CHECK(user < capsule.stack.size());
  CHECK(frame_naming(capsule.stack, "abort") <= user);
  check_no_handler_frames(capsule.stack);
}

TEST_CASE("a worker lost without a crash signal leaves no capsule", "[crash_capsule][process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});

  SECTION("it exits") {
    scale::Iterator<int> numbers(support::iota(4), manager);
    const scale::WorkerLost lost = expect_worker_lost([&] { numbers.map(exit_on_2, once).get(); });
    CHECK(lost.index() == 2);
    CHECK_THAT(lost.status(), Catch::Contains("exited with status 3"));
    CHECK_FALSE(lost.capsule().has_value());
  }

  SECTION("the test kills it with SIGKILL") {
    const std::filesystem::path dir =
        std::filesystem::temp_directory_path() / ("scale-capsule-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string marker = (dir / "running").string();
    scale::Iterator<std::string> paths(std::vector<std::string>{marker}, manager);
    auto result = paths.map(wait_to_be_killed, once);
    // The item runs once its marker is there; the pid in it is that of one of this pool's workers.
    REQUIRE(support::eventually([&] { return std::filesystem::exists(marker); }));
    pid_t pid = 0;
    std::ifstream(marker) >> pid;
    const std::vector<pid_t> workers = manager.worker_pids();
    REQUIRE(std::find(workers.begin(), workers.end(), pid) != workers.end());
    REQUIRE(::kill(pid, SIGKILL) == 0);
    const scale::WorkerLost lost = expect_worker_lost([&] { result.get(); });
    CHECK_THAT(lost.status(), Catch::Contains("SIGKILL"));
    CHECK_FALSE(lost.capsule().has_value());
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("a WorkerLost keeps its capsule across the wire", "[crash_capsule][wire]") {
  scale::CrashReport report{.signal = SIGSEGV,
                            .signal_name = "SIGSEGV",
                            .item_index = 4321,
                            .item = "4321",
                            .stack = {"f(int) at a.cpp:3", "main at b.cpp:9"},
                            .host = "here",
                            .pid = 77};
  const scale::WorkerLost sent(4321, "killed by signal SIGSEGV (11)", 4, report);
  std::string bytes;
  scale::detail::encode_exception(std::make_exception_ptr(sent), bytes);
  try {
    std::rethrow_exception(scale::detail::decode_exception(bytes));
  } catch (const scale::WorkerLost& received) {
    REQUIRE(received.capsule().has_value());
    CHECK(received.capsule()->signal == SIGSEGV);
    CHECK(received.capsule()->signal_name == "SIGSEGV");
    CHECK(received.capsule()->item_index == 4321);
    CHECK(received.capsule()->item == "4321");
    CHECK(received.capsule()->stack == report.stack);
    CHECK(received.capsule()->host == "here");
    CHECK(received.capsule()->pid == 77);
    CHECK(std::string(received.what()) == sent.what());
  }
  // One without a capsule stays without; a capsule that lost a field is a malformed report.
  bytes.clear();
  scale::detail::encode_exception(std::make_exception_ptr(scale::WorkerLost(1, "exited with status 3", 1)), bytes);
  try {
    std::rethrow_exception(scale::detail::decode_exception(bytes));
  } catch (const scale::WorkerLost& received) {
    CHECK_FALSE(received.capsule().has_value());
  }
  nlohmann::json wire = scale::detail::error_to_json(std::make_exception_ptr(sent));
  wire["capsule"].erase("stack");
  CHECK_THROWS_WITH(std::rethrow_exception(scale::detail::error_from_json(wire)),
                    Catch::Contains("malformed") && Catch::Contains("stack"));
}

int main(int argc, char** argv) {
  // In a worker this serves tasks and never returns. In the parent the Runtime goes away again:
  // each test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
