// The hang watchdog every test executable carries (support/hang_watchdog.cpp), on a test that
// hangs: this executable runs itself with the hidden test case below and SCALE_TEST_HANG_SECONDS=1,
// with gdb on its PATH and without.

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "support/spawn.hpp"

/// Where the hidden test case waits; not static, so that its name is in the symbol table and in gdb's stacks.
void watched_test_waits_here();
[[gnu::noinline]] void watched_test_waits_here() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

TEST_CASE("a test that never returns", "[.hangs]") { watched_test_waits_here(); }

namespace {

struct Ended {
  int status = -1;  // as waitpid gives it
  std::string output;
};

/// Runs this executable's hidden test case with SCALE_TEST_HANG_SECONDS=1 and PATH set to `path`,
/// and gives its exit status and what it printed. (Were its watchdog to fail, this process's own
/// would end the test, and the child with it.)
Ended run_hanging_test(const std::string& path) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  int log_fd = -1;
  // env sets the variables before the exec: nothing but async-signal-safe calls in the forked child.
  const pid_t pid = support::spawn_with_log(
      "/usr/bin/env", {"SCALE_TEST_HANG_SECONDS=1", "PATH=" + path, self, "[.hangs]"}, log_fd, true);
  Ended ended;
  char buffer[4096];
  for (ssize_t got; (got = ::read(log_fd, buffer, sizeof buffer)) > 0;)  // to the end: the child has exited
    ended.output.append(buffer, static_cast<std::size_t>(got));
  ::close(log_fd);
  ::waitpid(pid, &ended.status, 0);
  return ended;
}

bool holds(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("a hung test prints its threads' stacks through gdb and exits with 124", "[hang_watchdog]") {
  const Ended ended = run_hanging_test("/usr/bin:/bin");
  INFO(ended.output);
  REQUIRE(WIFEXITED(ended.status));
  REQUIRE(WEXITSTATUS(ended.status) == 124);
  REQUIRE(holds(ended.output, "still running after 1 s (SCALE_TEST_HANG_SECONDS)"));
  REQUIRE(holds(ended.output, "--- stacks of process "));
  if (holds(ended.output, "ptrace: Operation not permitted")) {
    // gdb ran on the right process; this machine's kernel lets no process trace another.
    WARN("gdb may not attach here: the stack itself is not checked");
  } else {
    REQUIRE(holds(ended.output, "watched_test_waits_here"));
  }
}

TEST_CASE("a hung test without gdb says so and still exits with 124 before ctest's timeout", "[hang_watchdog]") {
  const std::filesystem::path empty = std::filesystem::temp_directory_path() /
                                      ("scale-no-gdb-" + std::to_string(::getpid()));
  std::filesystem::create_directories(empty);
  const Ended ended = run_hanging_test(empty.string());
  std::filesystem::remove(empty);
  INFO(ended.output);
  REQUIRE(WIFEXITED(ended.status));
  REQUIRE(WEXITSTATUS(ended.status) == 124);
  REQUIRE(holds(ended.output, "still running after 1 s (SCALE_TEST_HANG_SECONDS)"));
  REQUIRE(holds(ended.output, "could not run gdb to print the stacks (make deps installs it)"));
  REQUIRE_FALSE(holds(ended.output, "watched_test_waits_here"));
}
