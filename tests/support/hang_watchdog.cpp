// A test process that is still running after SCALE_TEST_HANG_SECONDS (default 100, below ctest's
// 120-second timeout; 0 turns it off) prints the stack of every thread of itself and of its child
// processes (gdb -batch, attached by pid), then exits with status 124. A hang then fails with the
// frames that show where it waits, instead of a bare "Timeout" from ctest, which kills the test
// and leaves nothing to read.
//
// Linked into every Catch2 test executable (tests/CMakeLists.txt), so workers that are the test's
// own executable run one too: a worker left hanging after its parent reports itself the same way.
//
// Why it looks like this:
//   - A detached thread started by a static object: nothing for a test to call, and it never
//     delays exit (a process that returns from main ends the sleeping thread with it).
//   - gdb in a child made with posix_spawnp (no fork of a multi-threaded process), its output on
//     this process's stderr, which ctest keeps; prctl(PR_SET_PTRACER) lets it attach where Yama
//     allows a process to be traced by its ancestors only. `make deps` installs gdb; without it
//     the watchdog says so and still ends the test before ctest's timeout.

#include "processes.hpp"

#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace support {
namespace {

/// The seconds after which the process counts as hung: SCALE_TEST_HANG_SECONDS, 0 for never.
long hang_seconds() {
  const char* text = std::getenv("SCALE_TEST_HANG_SECONDS");
  if (text == nullptr || *text == '\0') return 100;
  char* end = nullptr;
  const long seconds = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || seconds < 0) {
    std::fprintf(stderr, "SCALE_TEST_HANG_SECONDS=%s: give a whole number of seconds (0 turns the watchdog off); using 100\n",
                 text);
    return 100;
  }
  return seconds;
}

std::string command_line(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/cmdline");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  for (char& c : text)
    if (c == '\0') c = ' ';
  return text;
}

/// Prints every thread's stack of `pid` on stderr through gdb; false when gdb could not be run.
bool print_stacks(pid_t pid) {
  std::fprintf(stderr, "--- stacks of process %d (%s) ---\n", static_cast<int>(pid), command_line(pid).c_str());
  std::fflush(stderr);
  const std::string target = std::to_string(pid);
  std::vector<std::string> args{"gdb", "-batch", "-nx", "-iex", "set print thread-events off", "-p", target,
                                "-ex", "set pagination off", "-ex", "thread apply all bt"};
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", 0, 0);
  pid_t gdb = 0;
  const int failed = posix_spawnp(&gdb, "gdb", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (failed != 0) {
    std::fprintf(stderr, "hang watchdog: could not run gdb to print the stacks (make deps installs it)\n");
    return false;
  }
  int status = 0;
  ::waitpid(gdb, &status, 0);
  return true;
}

void watch(long seconds) {
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const pid_t self = ::getpid();
  std::fprintf(stderr,
               "hang watchdog: process %d still running after %ld s (SCALE_TEST_HANG_SECONDS); "
               "the stacks of its threads and of its children's follow, then it exits with 124\n",
               static_cast<int>(self), seconds);
  ::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
  // gdb has been waited for: children_of sees only the test's own children.
  if (print_stacks(self))
    for (const pid_t child : children_of(self)) print_stacks(child);
  std::fflush(nullptr);
  ::_exit(124);
}

struct HangWatchdog {
  HangWatchdog() {
    if (const long seconds = hang_seconds(); seconds > 0) std::thread(watch, seconds).detach();
  }
};

const HangWatchdog watchdog;

}  // namespace
}  // namespace support
