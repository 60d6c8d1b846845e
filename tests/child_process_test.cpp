// Child processes of the same executable: spawning, the link, exit statuses, reaping, and what a
// child inherits. This executable is its own child: main() checks child_link() and, when it was
// started by a ProcessSpawner with --child-mode, runs one of the behaviours below instead of the
// tests.

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "process/child_process.hpp"
#include "sanitizers/deliberate_crash.hpp"
#include <scale/detail/wire.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using scale::detail::ChildProcess;
using scale::detail::ExitInfo;
using scale::detail::ProcessSpawner;
using scale::detail::SpawnOptions;
using namespace std::chrono_literals;

namespace {

std::string g_program = "child_process_test";

// ----- child behaviours ---------------------------------------------------------------------

[[noreturn]] void sleep_forever() {
  for (;;) ::pause();
}

void wait_for_eof(int fd) {
  char buffer[256];
  for (;;) {
    ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
    if (got == 0 || (got < 0 && errno != EINTR)) return;
  }
}

/// Echoes every frame back, then exits 0 at end-of-file.
int child_echo(int fd) {
  scale::detail::FrameReader reader;
  for (;;) {
    auto room = reader.prepare();
    ssize_t got = ::recv(fd, room.data(), room.size(), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return 0;
    reader.commit(static_cast<std::size_t>(got));
    std::string out;
    while (auto frame = reader.next()) scale::detail::encode_frame(out, frame->type, frame->id, frame->payload);
    if (!scale::detail::send_all(fd, out)) return 1;
  }
}

std::string list_signals(auto&& included) {
  std::string text;
  for (int signal = 1; signal < 32; ++signal)
    if (included(signal)) text += (text.empty() ? "" : ",") + std::to_string(signal);
  return text.empty() ? "none" : text;
}

/// One line about what the child inherited.
std::string child_report(const scale::detail::ChildLink& link) {
  std::ostringstream out;
  struct stat in, null;
  bool devnull = ::fstat(0, &in) == 0 && ::stat("/dev/null", &null) == 0 && S_ISCHR(in.st_mode) &&
                 in.st_rdev == null.st_rdev;
  out << "stdin=" << (devnull ? "devnull" : "other");

  sigset_t mask;
  ::sigprocmask(SIG_BLOCK, nullptr, &mask);
  out << " blocked=" << list_signals([&](int s) { return sigismember(&mask, s) == 1; });
  out << " nondefault=" << list_signals([&](int s) {
    struct sigaction action;
    return ::sigaction(s, nullptr, &action) == 0 && action.sa_handler != SIG_DFL;
  });

  std::vector<int> fds;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (dirent* entry = ::readdir(dir))
      if (entry->d_name[0] != '.' && std::atoi(entry->d_name) != ::dirfd(dir)) fds.push_back(std::atoi(entry->d_name));
    ::closedir(dir);
  }
  std::sort(fds.begin(), fds.end());
  out << " fds=";
  for (std::size_t i = 0; i < fds.size(); ++i) out << (i ? "," : "") << fds[i];

  int deathsig = 0;
  ::prctl(PR_GET_PDEATHSIG, &deathsig);
  out << " pdeathsig=" << deathsig;
  out << " parent=" << (::getppid() == link.parent_pid ? "ok" : "wrong");
  out << " env=" << (std::getenv(scale::detail::link_fd_env) ? "leaked" : "clean");
  const char* marker = std::getenv("SCALE_CHILD_TEST_MARKER");
  out << " marker=" << (marker ? marker : "unset");
  int flags = ::fcntl(link.fd, F_GETFD);
  out << " link_cloexec=" << ((flags & FD_CLOEXEC) ? "yes" : "no");
  return out.str() + "\n";
}

/// The child that dies of SIGABRT, with no core file left behind.
[[noreturn]] SCALE_TEST_DELIBERATE_CRASH void abort_without_core() {
  struct rlimit no_core {
    0, 0
  };
  ::setrlimit(RLIMIT_CORE, &no_core);
  std::abort();
}

int run_child(const scale::detail::ChildLink& link, int argc, char** argv) {
  std::string mode = argc > 2 ? argv[2] : "";
  if (mode == "--child-echo") return child_echo(link.fd);
  if (mode == "--child-exit") return argc > 3 ? std::atoi(argv[3]) : 0;
  if (mode == "--child-abort") abort_without_core();
  if (mode == "--child-sleep") sleep_forever();
  if (mode == "--child-wait-eof") {
    wait_for_eof(link.fd);
    return 0;
  }
  if (mode == "--child-report") {
    scale::detail::send_all(link.fd, child_report(link));
    wait_for_eof(link.fd);
    return 0;
  }
  if (mode == "--child-watch-parent") {
    // Reports, then polls parent_gone() until the parent closes the link.
    scale::detail::send_all(link.fd, "watching\n");
    while (!scale::detail::parent_gone(link)) std::this_thread::sleep_for(5ms);
    return 7;
  }
  if (mode == "--child-spawn-grandchild") {
    ProcessSpawner spawner;
    SpawnOptions options;
    options.arguments = {argv[0], "--child-mode", "--child-sleep"};
    ChildProcess grandchild = spawner.spawn(std::move(options));
    scale::detail::send_all(link.fd, std::to_string(grandchild.pid()) + "\n");
    sleep_forever();
  }
  std::fprintf(stderr, "child_process_test: unknown child mode '%s'\n", mode.c_str());
  return 2;
}

// ----- test helpers -------------------------------------------------------------------------

SpawnOptions child(std::vector<std::string> flags) {
  SpawnOptions options;
  options.arguments = {g_program, "--child-mode"};
  options.arguments.insert(options.arguments.end(), flags.begin(), flags.end());
  return options;
}

/// Reads up to a newline, waiting at most `timeout`; "" on timeout or end-of-file.
std::string read_line(int fd, std::chrono::milliseconds timeout = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string line;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) return "";
    pollfd readable{fd, POLLIN, 0};
    if (::poll(&readable, 1, static_cast<int>(left.count())) <= 0) continue;
    char c;
    ssize_t got = ::recv(fd, &c, 1, 0);
    if (got <= 0) return "";
    if (c == '\n') return line;
    line += c;
  }
}

/// The state letter of a process in /proc, or 0 when there is no such process.
char process_state(pid_t pid, pid_t* parent = nullptr) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return 0;
  auto close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return 0;
  std::istringstream rest(text.substr(close + 2));
  char state = 0;
  pid_t ppid = 0;
  rest >> state >> ppid;
  if (parent) *parent = ppid;
  return state;
}

bool process_gone(pid_t pid) {
  char state = process_state(pid);
  return state == 0 || state == 'Z' || state == 'X';
}

/// Our children in /proc, and how many of them are zombies.
std::pair<int, int> count_children() {
  int children = 0, zombies = 0;
  if (DIR* dir = ::opendir("/proc")) {
    while (dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
      pid_t parent = 0;
      char state = process_state(std::atoi(entry->d_name), &parent);
      if (state != 0 && parent == ::getpid()) {
        ++children;
        if (state == 'Z') ++zombies;
      }
    }
    ::closedir(dir);
  }
  return {children, zombies};
}

int count_open_fds() {
  int count = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (dirent* entry = ::readdir(dir)) count += entry->d_name[0] != '.';
    ::closedir(dir);
  }
  return count - 1;  // the directory's own descriptor
}

/// Sends one frame through an echoing child and checks that it comes back.
void check_echo(const ChildProcess& process, std::uint64_t id, const std::string& payload) {
  std::string out;
  scale::detail::encode_frame(out, scale::detail::FrameType::task, id, payload);
  REQUIRE(scale::detail::send_all(process.link_fd(), out));
  scale::detail::FrameReader reader;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  for (;;) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    pollfd readable{process.link_fd(), POLLIN, 0};
    if (::poll(&readable, 1, 100) <= 0) continue;
    auto room = reader.prepare();
    ssize_t got = ::recv(process.link_fd(), room.data(), room.size(), 0);
    REQUIRE(got > 0);
    reader.commit(static_cast<std::size_t>(got));
    if (auto frame = reader.next()) {
      CHECK(frame->id == id);
      CHECK(frame->payload == payload);
      return;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (auto link = scale::detail::child_link(); link && argc > 1 && std::string(argv[1]) == "--child-mode")
    return run_child(*link, argc, argv);
  g_program = argv[0];
  return Catch::Session().run(argc, argv);
}

// ----- tests --------------------------------------------------------------------------------

TEST_CASE("a spawned child echoes frames over its link and exits 0 when the link closes", "[child_process]") {
  ProcessSpawner spawner;
  ChildProcess process = spawner.spawn(child({"--child-echo"}));
  REQUIRE(process.valid());
  CHECK(process.pid() > 0);
  CHECK(process.running());
  check_echo(process, 1, "hello");
  check_echo(process, 2, std::string(1 << 20, 'x'));  // larger than a socket buffer
  process.close_link();
  auto info = process.wait_for(5s);
  REQUIRE(info);
  CHECK(info->exited());
  CHECK(info->exit_status == 0);
  CHECK(info->describe() == "exited with status 0");
  CHECK_FALSE(process.running());
  CHECK_FALSE(process.kill(SIGKILL));  // reaped: never signals a recycled pid
}

TEST_CASE("an exit status is reported as a readable string with the raw value", "[child_process]") {
  ProcessSpawner spawner;
  ChildProcess process = spawner.spawn(child({"--child-exit", "3"}));
  auto info = process.wait_for(5s);
  REQUIRE(info);
  CHECK(info->describe() == "exited with status 3");
  CHECK(info->exit_status == 3);
  CHECK(WIFEXITED(info->raw_status));
  CHECK(info->pid == process.pid());
}

TEST_CASE("a child that calls abort is reported as killed by SIGABRT", "[child_process]") {
  ProcessSpawner spawner;
  SpawnOptions options = child({"--child-abort"});
  options.extra_environment = scale_test::no_sanitizer_signal_handlers();
  ChildProcess process = spawner.spawn(std::move(options));
  auto info = process.wait_for(5s);
  REQUIRE(info);
  CHECK(info->signaled());
  CHECK(info->signal == SIGABRT);
  CHECK_THAT(info->describe(), Catch::StartsWith("killed by signal SIGABRT (6)"));
}

TEST_CASE("a child killed with SIGKILL is reported as killed by signal SIGKILL (9)", "[child_process]") {
  ProcessSpawner spawner;
  ChildProcess process = spawner.spawn(child({"--child-sleep"}));
  CHECK(process.kill(SIGKILL));
  auto info = process.wait_for(5s);
  REQUIRE(info);
  CHECK(info->describe() == "killed by signal SIGKILL (9)");
  CHECK(WIFSIGNALED(info->raw_status));
}

TEST_CASE("exit statuses describe themselves", "[child_process]") {
  CHECK(scale::detail::make_exit_info(1, 3 << 8).describe() == "exited with status 3");
  CHECK(scale::detail::make_exit_info(1, SIGKILL).describe() == "killed by signal SIGKILL (9)");
  CHECK(scale::detail::make_exit_info(1, SIGSEGV | 0x80).describe() == "killed by signal SIGSEGV (11) (core dumped)");
  CHECK(scale::detail::make_exit_info(1, 40).describe() == "killed by signal 40");
  CHECK(ExitInfo{}.describe().find("unknown") != std::string::npos);
}

TEST_CASE("a child starts with stdin on /dev/null, an empty signal mask, default dispositions and only fds 0-3",
          "[child_process]") {
  // Block and ignore signals in the parent, before the spawner thread exists, as a program might.
  sigset_t blocked, old_mask;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &blocked, &old_mask);
  struct sigaction ignore {
  }, old_int{}, old_usr2{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGINT, &ignore, &old_int);
  ::sigaction(SIGUSR2, &ignore, &old_usr2);
  // A descriptor the program forgot to mark close-on-exec must not reach the child either.
  int leaky = ::open("/dev/null", O_RDONLY);
  ::setenv("SCALE_CHILD_TEST_MARKER", "spawn-time", 1);

  std::string report;
  {
    ProcessSpawner spawner;
    SpawnOptions options = child({"--child-report"});
    // The child reports its dispositions: a sanitizer's own handlers must not be among them.
    options.extra_environment = scale_test::no_sanitizer_signal_handlers();
    ChildProcess process = spawner.spawn(std::move(options));
    report = read_line(process.link_fd());
  }

  ::unsetenv("SCALE_CHILD_TEST_MARKER");
  ::close(leaky);
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGUSR2, &old_usr2, nullptr);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);

  INFO(report);
  CHECK_THAT(report, Catch::Contains("stdin=devnull"));
  CHECK_THAT(report, Catch::Contains("blocked=none"));
  CHECK_THAT(report, Catch::Contains("nondefault=none"));
  CHECK_THAT(report, Catch::Contains("fds=0,1,2,3 "));
  CHECK_THAT(report, Catch::Contains("pdeathsig=9"));
  CHECK_THAT(report, Catch::Contains("parent=ok"));
  CHECK_THAT(report, Catch::Contains("env=clean"));
  CHECK_THAT(report, Catch::Contains("marker=spawn-time"));
  CHECK_THAT(report, Catch::Contains("link_cloexec=yes"));
}

TEST_CASE("SpawnOptions::inherited_fd reaches the child as fd 4, and nothing else does", "[child_process]") {
  const int record = ::memfd_create("inherited", MFD_CLOEXEC);  // as the process pool's crash record
  REQUIRE(record >= 0);
  std::string report;
  {
    ProcessSpawner spawner;
    SpawnOptions options = child({"--child-report"});
    options.inherited_fd = record;
    ChildProcess process = spawner.spawn(std::move(options));
    report = read_line(process.link_fd());
  }
  ::close(record);
  INFO(report);
  CHECK_THAT(report, Catch::Contains("fds=0,1,2,3,4 "));
  CHECK_THAT(report, Catch::Contains("link_cloexec=yes"));
}

TEST_CASE("siblings do not hold each other's links: closing one link gives that child end-of-file at once",
          "[child_process]") {
  ProcessSpawner spawner;
  ChildProcess first = spawner.spawn(child({"--child-wait-eof"}));
  ChildProcess second = spawner.spawn(child({"--child-wait-eof"}));
  auto start = std::chrono::steady_clock::now();
  first.close_link();
  auto info = first.wait_for(2s);
  REQUIRE(info);
  CHECK(info->describe() == "exited with status 0");
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  CHECK(second.running());
  second.close_link();
  REQUIRE(second.wait_for(2s));
}

TEST_CASE("a child sees its parent gone through parent_gone once the link closes", "[child_process]") {
  ProcessSpawner spawner;
  ChildProcess process = spawner.spawn(child({"--child-watch-parent"}));
  REQUIRE(read_line(process.link_fd()) == "watching");
  process.close_link();
  auto info = process.wait_for(2s);
  REQUIRE(info);
  CHECK(info->exit_status == 7);
}

TEST_CASE("a grandchild dies within 2 s when its parent is killed with SIGKILL", "[child_process]") {
  ProcessSpawner spawner;
  ChildProcess middle = spawner.spawn(child({"--child-spawn-grandchild"}));
  std::string line = read_line(middle.link_fd());
  REQUIRE_FALSE(line.empty());
  pid_t grandchild = std::stoi(line);
  REQUIRE(grandchild > 0);
  CHECK_FALSE(process_gone(grandchild));

  auto start = std::chrono::steady_clock::now();
  REQUIRE(middle.kill(SIGKILL));
  auto info = middle.wait_for(2s);
  REQUIRE(info);
  CHECK(info->describe() == "killed by signal SIGKILL (9)");
  while (!process_gone(grandchild) && std::chrono::steady_clock::now() - start < 2s) std::this_thread::sleep_for(10ms);
  bool gone = process_gone(grandchild);
  if (!gone) ::kill(grandchild, SIGKILL);  // we started it (through the middle); do not leave it behind
  CHECK(gone);
}

TEST_CASE("writing to a dead child fails with EPIPE instead of raising SIGPIPE", "[child_process]") {
  ProcessSpawner spawner;
  ChildProcess process = spawner.spawn(child({"--child-exit", "0"}));
  REQUIRE(process.wait_for(5s));
  bool sent = true;
  for (int i = 0; i < 3 && sent; ++i) sent = scale::detail::send_all(process.link_fd(), std::string(4096, 'x'));
  CHECK_FALSE(sent);
  CHECK((errno == EPIPE || errno == ECONNRESET));
}

TEST_CASE("a child whose handle is dropped is still reaped and its on_exit called", "[child_process]") {
  ProcessSpawner spawner;
  std::promise<ExitInfo> exited;
  auto exit_future = exited.get_future();
  SpawnOptions options = child({"--child-echo"});
  options.on_exit = [&exited](const ExitInfo& info) { exited.set_value(info); };
  pid_t pid;
  {
    ChildProcess process = spawner.spawn(std::move(options));
    pid = process.pid();
  }  // closes the link: the echo child exits
  REQUIRE(exit_future.wait_for(5s) == std::future_status::ready);
  ExitInfo info = exit_future.get();
  CHECK(info.pid == pid);
  CHECK(info.describe() == "exited with status 0");
  CHECK(spawner.running() == 0);
  CHECK(process_state(pid) == 0);  // reaped, not a zombie
}

TEST_CASE("on_exit may spawn a replacement, and spawn_async answers on the spawner thread", "[child_process]") {
  ProcessSpawner spawner;
  std::promise<ChildProcess> replacement;
  auto replacement_future = replacement.get_future();
  SpawnOptions options = child({"--child-exit", "0"});
  options.on_exit = [&](const ExitInfo&) { replacement.set_value(spawner.spawn(child({"--child-wait-eof"}))); };
  std::promise<ChildProcess> first;
  auto first_future = first.get_future();
  spawner.spawn_async(std::move(options), [&](ChildProcess process, std::exception_ptr error) {
    CHECK(spawner.on_spawner_thread());
    if (error)
      first.set_exception(error);
    else
      first.set_value(std::move(process));
  });
  REQUIRE(first_future.wait_for(5s) == std::future_status::ready);
  ChildProcess original = first_future.get();
  REQUIRE(replacement_future.wait_for(5s) == std::future_status::ready);
  ChildProcess second = replacement_future.get();
  CHECK(second.pid() != original.pid());
  CHECK(second.running());
  second.close_link();
  CHECK(second.wait_for(2s));
}

TEST_CASE("a program that cannot be executed is a scale::Error naming it and the failing call", "[child_process]") {
  ProcessSpawner spawner;
  SpawnOptions options = child({});
  options.executable = "/nonexistent/scale-worker";
  CHECK_THROWS_WITH(spawner.spawn(std::move(options)), Catch::Contains("/nonexistent/scale-worker") &&
                                                           Catch::Contains("execve") &&
                                                           Catch::Contains("No such file"));
  CHECK(spawner.running() == 0);
  CHECK(count_children().first == 0);
}

TEST_CASE("destroying the spawner kills and reaps the children still running", "[child_process]") {
  pid_t pid;
  std::optional<ExitInfo> reported;
  {
    ProcessSpawner spawner;
    SpawnOptions options = child({"--child-sleep"});
    options.on_exit = [&](const ExitInfo& info) { reported = info; };
    ChildProcess process = spawner.spawn(std::move(options));
    pid = process.pid();
  }
  REQUIRE(reported);
  CHECK(reported->describe() == "killed by signal SIGKILL (9)");
  CHECK(process_state(pid) == 0);
}

TEST_CASE("spawning and reaping 100 children in a row leaks no descriptor and leaves no zombie", "[child_process]") {
  ProcessSpawner spawner;
  const int fds_before = count_open_fds();
  for (int i = 0; i < 100; ++i) {
    ChildProcess process = spawner.spawn(child({"--child-echo"}));
    check_echo(process, static_cast<std::uint64_t>(i), "item " + std::to_string(i));
    process.close_link();
    auto info = process.wait_for(5s);
    REQUIRE(info);
    REQUIRE(info->exit_status == 0);
  }
  CHECK(spawner.running() == 0);
  CHECK(count_open_fds() == fds_before);
  auto [children, zombies] = count_children();
  CHECK(children == 0);
  CHECK(zombies == 0);
}

TEST_CASE("a process that was not spawned as a child has no child link", "[child_process]") {
  CHECK_FALSE(scale::detail::child_link());
}
