// ClusterManager across hosts, each host a network namespace of its own: Redis, the manager and
// two workers, joined through a bridge in the Redis namespace by one veth pair per host. One
// worker's link is cut mid-map (`ip link set ... down`); the map still returns every result.
//
// Runs only where the machine allows it (root, `ip netns`, redis-server and redis-cli);
// elsewhere it says why and passes as skipped. Everything it starts it kills by pid, and it
// deletes its namespaces on every exit path. Names carry this process's pid, so parallel runs
// never share a namespace. The manager and the workers are this test executable itself, run
// with `ip netns exec`: a worker with --scale-worker (served by the Runtime built in main), the
// manager with --netns-manager (main runs it instead of the tests).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* redis_address = "10.77.0.1";
constexpr int item_count = 80;
constexpr int worker_heartbeat_ms = 200;  // a worker's key lives 3 intervals: lost 0.6 s after its link goes

auto slow_triple = [](int x) {
  std::this_thread::sleep_for(50ms);
  return 3 * x;
};

// --- processes ------------------------------------------------------------------------------

/// Starts `args` (searched in PATH); its stdout goes to `out_fd` (-1: /dev/null), its stderr to
/// ours unless `quiet`. Returns the pid, or -1.
pid_t spawn(const std::vector<std::string>& args, int out_fd = -1, bool quiet = false) {
  std::vector<char*> argv;
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (out_fd >= 0)
    posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  else
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  if (quiet) posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  if (::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

/// Runs `args` to the end; true when it exits 0.
bool run(const std::vector<std::string>& args, bool quiet = false) {
  const pid_t pid = spawn(args, -1, quiet);
  if (pid < 0) return false;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/// Runs `args` and returns what it wrote to stdout.
std::string output_of(const std::vector<std::string>& args) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {};
  const pid_t pid = spawn(args, fds[1], true);
  ::close(fds[1]);
  std::string text;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) text.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  if (pid > 0) ::waitpid(pid, nullptr, 0);
  return text;
}

bool on_path(const std::string& program) { return run({"sh", "-c", "command -v " + program}, true); }

void kill_and_reap(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

std::string self_path() {
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  return n > 0 ? std::string(path, static_cast<std::size_t>(n)) : std::string();
}

// --- the network --------------------------------------------------------------------------------

const std::string name_prefix = "scale-nt";

/// Kills what runs in namespace `name` (by pid) and deletes it.
void remove_namespace(const std::string& name) {
  std::istringstream pids(output_of({"ip", "netns", "pids", name}));
  for (long pid; pids >> pid;) ::kill(static_cast<pid_t>(pid), SIGKILL);
  run({"ip", "netns", "del", name}, true);
}

/// Namespaces an earlier run of this test left behind when it was killed outright: their names
/// carry the pid of a process that no longer exists.
void remove_stale_namespaces() {
  std::istringstream list(output_of({"ip", "netns", "list"}));
  for (std::string line; std::getline(list, line);) {
    const std::string name = line.substr(0, line.find(' '));
    if (name.rfind(name_prefix, 0) != 0) continue;
    const long pid = std::atol(name.c_str() + name_prefix.size());
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) remove_namespace(name);
  }
}

/// Four hosts: redis (with the bridge), manager, worker a, worker b. Each host reaches the bridge
/// through a veth pair whose bridge-side end is named after it (vm, va, vb) and whose host-side
/// end is eth0. Every process started in them is killed, and the namespaces deleted, on destruction.
class Lab {
 public:
  Lab() {
    const std::string tag = name_prefix + std::to_string(::getpid()) + "-";
    redis = tag + "redis";
    manager = tag + "manager";
    worker_a = tag + "a";
    worker_b = tag + "b";
  }
  ~Lab() {
    for (pid_t pid : m_pids) kill_and_reap(pid);
    for (const auto& name : m_created) remove_namespace(name);
  }
  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;

  /// Creates the namespaces and links; the reason when it cannot.
  std::optional<std::string> build() {
    for (const auto* name : {&redis, &manager, &worker_a, &worker_b}) {
      if (!run({"ip", "netns", "add", *name})) return "ip netns add " + *name + " failed";
      m_created.push_back(*name);
      if (!run({"ip", "-n", *name, "link", "set", "lo", "up"})) return "lo in " + *name;
    }
    if (!run({"ip", "-n", redis, "link", "add", "br0", "type", "bridge"}) ||
        !run({"ip", "-n", redis, "addr", "add", std::string(redis_address) + "/24", "dev", "br0"}) ||
        !run({"ip", "-n", redis, "link", "set", "br0", "up"}))
      return "the bridge in " + redis;
    const std::pair<const std::string*, const char*> hosts[] = {
        {&manager, "10.77.0.2"}, {&worker_a, "10.77.0.3"}, {&worker_b, "10.77.0.4"}};
    for (const auto& [host, address] : hosts) {
      const std::string end = bridge_end(*host);
      if (!run({"ip", "-n", redis, "link", "add", end, "type", "veth", "peer", "name", "eth0", "netns", *host}) ||
          !run({"ip", "-n", redis, "link", "set", end, "master", "br0", "up"}) ||
          !run({"ip", "-n", *host, "addr", "add", std::string(address) + "/24", "dev", "eth0"}) ||
          !run({"ip", "-n", *host, "link", "set", "eth0", "up"}))
        return "the link from " + *host + " to the bridge";
    }
    return std::nullopt;
  }

  /// Starts `args` inside namespace `name`; the process is killed when the lab goes.
  pid_t start_in(const std::string& name, std::vector<std::string> args, int out_fd = -1, bool quiet = false) {
    args.insert(args.begin(), {"ip", "netns", "exec", name});
    const pid_t pid = spawn(args, out_fd, quiet);
    if (pid > 0) m_pids.push_back(pid);
    return pid;
  }

  /// Waits for a process started with start_in to end; its exit status.
  int wait(pid_t pid) {
    int status = -1;
    ::waitpid(pid, &status, 0);
    std::erase(m_pids, pid);
    return status;
  }

  /// Takes the link between `host` and the bridge down: its packets go nowhere from now on.
  bool cut(const std::string& host) { return run({"ip", "-n", redis, "link", "set", bridge_end(host), "down"}); }

  std::string redis, manager, worker_a, worker_b;

 private:
  std::string bridge_end(const std::string& host) const {
    return host == manager ? "vm" : host == worker_a ? "va" : "vb";
  }

  std::vector<std::string> m_created;
  std::vector<pid_t> m_pids;
};

/// Why this machine cannot run the test, or nothing when it can.
std::optional<std::string> missing_prerequisite() {
  if (::geteuid() != 0) return "needs root (it creates network namespaces)";
  if (!on_path("ip")) return "needs the ip command (iproute2)";
  if (!on_path("redis-server") || !on_path("redis-cli")) return "needs redis-server and redis-cli (make deps)";
  const std::string probe = name_prefix + std::to_string(::getpid()) + "-probe";
  if (!run({"ip", "netns", "add", probe}, true)) return "ip netns add does not work here (no CAP_SYS_ADMIN?)";
  run({"ip", "netns", "del", probe}, true);
  return std::nullopt;
}

/// Reads one line from `fd` within `deadline`; nothing on timeout or end of input.
std::optional<std::string> read_line(int fd, std::string& buffer, Clock::time_point deadline) {
  for (;;) {
    const auto newline = buffer.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer.substr(0, newline);
      buffer.erase(0, newline + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return std::nullopt;
    pollfd entry{fd, POLLIN, 0};
    if (::poll(&entry, 1, static_cast<int>(left)) <= 0) continue;
    char chunk[512];
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) return std::nullopt;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
}

// --- the manager's side, run inside its namespace ---------------------------------------------

/// Waits for both workers, maps `item_count` slow items with chunk size 1, and reports on stdout:
/// "ready", then "progress <done>" after each chunk, then "done retried=<n>" once every result
/// checked out (or "error <what>"). Exit status 0 only in the first case.
int run_manager(const std::string& url) {
  scale::Runtime runtime;
  auto say = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  try {
    scale::ClusterOptions options;
    options.heartbeat_interval = std::chrono::milliseconds(worker_heartbeat_ms);
    options.heartbeat_ttl = std::chrono::milliseconds(3 * worker_heartbeat_ms);
    options.wait_for_workers = 10s;
    scale::ClusterManager manager(url, options);
    const auto deadline = Clock::now() + 10s;
    while (manager.stats().workers_alive < 2) {
      if (Clock::now() > deadline) {
        say("error the two workers did not join within 10 s");
        return 1;
      }
      std::this_thread::sleep_for(20ms);
    }
    say("ready");
    std::vector<int> items(item_count);
    std::iota(items.begin(), items.end(), 0);
    scale::Iterator<int> numbers(items, manager);
    scale::RunOptions run_options;
    run_options.chunk_size = 1;
    run_options.progress = [&say](std::size_t done, std::size_t) { say("progress " + std::to_string(done)); };
    const std::vector<int> result = numbers.map(slow_triple, run_options).get();
    for (int i = 0; i < item_count; ++i)
      if (result.at(static_cast<std::size_t>(i)) != 3 * i) {
        say("error item " + std::to_string(i) + " is " + std::to_string(result[static_cast<std::size_t>(i)]));
        return 1;
      }
    say("done retried=" + std::to_string(manager.stats().tasks_retried));
    return 0;
  } catch (const std::exception& error) {
    say(std::string("error ") + error.what());
    return 1;
  }
}

}  // namespace

TEST_CASE("a map across network namespaces completes when one worker's link is cut mid-map", "[cluster][netns]") {
  if (auto reason = missing_prerequisite()) {
    WARN("skipped: " << *reason);
    return;
  }
  remove_stale_namespaces();
  Lab lab;
  if (const auto broken = lab.build()) FAIL("could not build the network: " << *broken);

  const std::string port = "6379";
  const std::string url = std::string("redis://") + redis_address + ":" + port;
  REQUIRE(lab.start_in(lab.redis,
                       {"redis-server", "--bind", redis_address, "--port", port, "--protected-mode", "no", "--save", "",
                        "--appendonly", "no", "--loglevel", "warning"},
                       -1, true) > 0);
  const auto redis_deadline = Clock::now() + 10s;
  while (output_of({"ip", "netns", "exec", lab.redis, "redis-cli", "-h", redis_address, "-p", port, "ping"})
             .find("PONG") == std::string::npos) {
    REQUIRE(Clock::now() < redis_deadline);
    std::this_thread::sleep_for(50ms);
  }

  const std::string self = self_path();
  const std::string heartbeat = std::to_string(worker_heartbeat_ms);
  REQUIRE(lab.start_in(lab.worker_a, {self, "--scale-worker", url, "--scale-heartbeat-ms", heartbeat}) > 0);
  REQUIRE(lab.start_in(lab.worker_b, {self, "--scale-worker", url, "--scale-heartbeat-ms", heartbeat}) > 0);

  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  const pid_t manager = lab.start_in(lab.manager, {self, "--netns-manager", url}, fds[1]);
  ::close(fds[1]);
  REQUIRE(manager > 0);

  // Cut worker a's link once a quarter of the items are done: it holds a chunk at that moment
  // (one item takes 50 ms, and each worker always has one), which must run again on worker b.
  const auto deadline = Clock::now() + 30s;
  std::string buffer, last;
  bool cut = false;
  std::optional<std::string> line;
  while ((line = read_line(fds[0], buffer, deadline))) {
    last = *line;
    if (!cut && last.rfind("progress ", 0) == 0 && std::stoi(last.substr(9)) >= item_count / 4) {
      REQUIRE(lab.cut(lab.worker_a));
      cut = true;
    }
    if (last.rfind("done", 0) == 0 || last.rfind("error", 0) == 0) break;
  }
  ::close(fds[0]);
  INFO("the manager's last line: " << last);
  REQUIRE(cut);
  REQUIRE(last.rfind("done retried=", 0) == 0);
  CHECK(std::stoi(last.substr(13)) >= 1);  // worker a's chunk ran again
  const int status = lab.wait(manager);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

int main(int argc, char** argv) {
  // As a worker (--scale-worker), this serves tasks and never returns.
  { scale::Runtime runtime(argc, argv); }
  if (argc == 3 && std::strcmp(argv[1], "--netns-manager") == 0) return run_manager(argv[2]);
  return Catch::Session().run(argc, argv);
}
