// scale-store against redis-server, both started by this program on free loopback ports and
// stopped by their pids at the end (run by `make bench`, or alone: build/bench/store_vs_redis).
//
// Fairness: both servers get the same kind of load from a mature, single-threaded, epoll-based C
// client: wrk (-t1) for scale-store's HTTP API and redis-benchmark (its default single thread)
// for Redis. Both are closed loops over the same number of keep-alive connections, one request
// in flight per connection (no pipelining), 16-byte values on one key. Each figure is the best
// of two runs, scale-store's and Redis's runs alternating, so a burst of other load on the
// machine does not favour either. Client and servers share the machine's cores.
//
// Lines: GET and PUT at 50 and 1 connections; durable PUT at 50 connections (scale-store
// --data-dir --fsync always vs Redis appendonly with appendfsync always; skipped with a note
// when this scale-store has no --data-dir); resident memory (VmRSS) after loading 1,000,000 keys
// with 16-byte values (scale-store by POST /v1/kv objects of 10,000 keys, Redis by MSETs of
// 10,000 keys). Targets (reported, never asserted): ops/s >= 1.0x Redis at 50 and at 1
// connections (with /metrics counting every request, as it always does), durable PUT >= 1.0x,
// memory <= 1.5x. Every line is recorded in results.json (bench/support/results.hpp), and so is
// a sweep for the plot: GET and PUT at 1, 2, 4, ..., 256 connections, one run of
// SCALE_BENCH_SWEEP_SECONDS (default 1) per side and point.
//
// Environment: SCALE_BENCH_SECONDS (default 3) sets the length of each load run;
// SCALE_BENCH_SWEEP_SECONDS (default 1; 0 skips the sweep) each sweep run's;
// SCALE_BENCH_STORE names another scale-store program to measure (e.g. an older build).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../tests/support/loopback.hpp"
#include "support/results.hpp"

#ifndef SCALE_STORE_BINARY
#error "bench/CMakeLists.txt defines SCALE_STORE_BINARY (the scale-store program of this build)"
#endif

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

bool on_path(const std::string& program) {
  std::string command = "command -v " + program + " >/dev/null 2>&1";
  return std::system(command.c_str()) == 0;
}

/// A server process of this run, stopped (SIGTERM, then SIGKILL) by its pid.
class Server {
 public:
  Server(std::string name, std::vector<std::string> argv, int port) : m_name(std::move(name)), m_port(port) {
    m_pid = ::fork();
    if (m_pid < 0) throw std::runtime_error("fork failed");
    if (m_pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      std::vector<char*> args;
      for (auto& arg : argv) args.push_back(arg.data());
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + 10s;
    for (;;) {
      int fd = connect_to(port);
      if (fd >= 0) {
        ::close(fd);
        break;
      }
      int status = 0;
      if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
        m_pid = -1;
        throw std::runtime_error(m_name + " exited at start");
      }
      if (std::chrono::steady_clock::now() > deadline) {
        stop();
        throw std::runtime_error(m_name + " did not start listening within 10 s");
      }
      std::this_thread::sleep_for(10ms);
    }
  }
  ~Server() { stop(); }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const { return m_port; }

  /// VmRSS from /proc/<pid>/status, in bytes.
  std::int64_t rss() const {
    std::ifstream status("/proc/" + std::to_string(m_pid) + "/status");
    std::string line;
    while (std::getline(status, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
    throw std::runtime_error("no VmRSS for " + m_name);
  }

  void stop() {
    if (m_pid <= 0) return;
    ::kill(m_pid, SIGTERM);
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(m_pid, nullptr, WNOHANG) == m_pid) {
        m_pid = -1;
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
    ::kill(m_pid, SIGKILL);
    ::waitpid(m_pid, nullptr, 0);
    m_pid = -1;
  }

 private:
  std::string m_name;
  int m_port;
  pid_t m_pid = -1;
};

/// Runs a shell command and returns what it printed on stdout.
std::string run(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run: " + command);
  char chunk[4096];
  std::size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, pipe)) > 0) out.append(chunk, n);
  ::pclose(pipe);
  return out;
}

/// A small blocking client, enough to load data and check answers.
class Connection {
 public:
  explicit Connection(int port) : m_fd(connect_to(port)) {
    if (m_fd < 0) throw std::runtime_error("cannot connect to port " + std::to_string(port));
  }
  ~Connection() { ::close(m_fd); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void send(const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = ::write(m_fd, bytes.data() + sent, bytes.size() - sent);
      if (n <= 0) throw std::runtime_error("write failed");
      sent += static_cast<std::size_t>(n);
    }
  }
  /// Reads until `complete(buffer)` returns the length of a whole answer; returns that answer.
  std::string receive(const std::function<std::size_t(const std::string&)>& complete) {
    for (;;) {
      if (std::size_t n = complete(m_buffer)) {
        std::string answer = m_buffer.substr(0, n);
        m_buffer.erase(0, n);
        return answer;
      }
      char chunk[65536];
      ssize_t n = ::read(m_fd, chunk, sizeof chunk);
      if (n <= 0) throw std::runtime_error("the server closed the connection");
      m_buffer.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  int m_fd;
  std::string m_buffer;
};

/// Length of one HTTP response with a Content-Length at the start of `buffer`, or 0.
std::size_t http_response_length(const std::string& buffer) {
  auto end = buffer.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  auto at = buffer.find("Content-Length: ");
  if (at == std::string::npos || at > end) at = buffer.find("content-length: ");
  if (at == std::string::npos || at > end) throw std::runtime_error("an answer without Content-Length");
  std::size_t length = std::stoul(buffer.substr(at + 16));
  return buffer.size() >= end + 4 + length ? end + 4 + length : 0;
}

/// Length of one RESP simple reply (+OK, :N, -ERR) at the start of `buffer`, or 0.
std::size_t resp_line_length(const std::string& buffer) {
  auto end = buffer.find("\r\n");
  return end == std::string::npos ? 0 : end + 2;
}

std::string http_request(const std::string& method, const std::string& target, const std::string& body) {
  return method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

void expect_ok(const std::string& answer, const std::string& what) {
  if (answer.rfind("HTTP/1.1 200", 0) != 0 && answer.rfind("+OK", 0) != 0)
    throw std::runtime_error(what + " failed: " + answer.substr(0, 200));
}

constexpr int keys_for_memory = 1'000'000;
constexpr int keys_per_batch = 10'000;
const std::string value16 = "vvvvvvvvvvvvvvvv";  // 16 bytes

std::string key_name(int i) {
  char name[32];
  std::snprintf(name, sizeof name, "key:%07d", i);
  return name;
}

void load_scale(int port) {
  Connection connection(port);
  for (int first = 0; first < keys_for_memory; first += keys_per_batch) {
    std::string body = "{";
    for (int i = first; i < first + keys_per_batch; ++i) {
      if (i != first) body += ',';
      body += "\"" + key_name(i) + "\":\"" + value16 + "\"";
    }
    body += "}";
    connection.send(http_request("POST", "/v1/kv", body));
    expect_ok(connection.receive(http_response_length), "POST /v1/kv");
  }
}

void load_redis(int port) {
  Connection connection(port);
  for (int first = 0; first < keys_for_memory; first += keys_per_batch) {
    std::string command = "*" + std::to_string(1 + 2 * keys_per_batch) + "\r\n$4\r\nMSET\r\n";
    for (int i = first; i < first + keys_per_batch; ++i) {
      std::string key = key_name(i);
      command += "$" + std::to_string(key.size()) + "\r\n" + key + "\r\n";
      command += "$" + std::to_string(value16.size()) + "\r\n" + value16 + "\r\n";
    }
    connection.send(command);
    expect_ok(connection.receive(resp_line_length), "MSET");
  }
  connection.send("*1\r\n$6\r\nDBSIZE\r\n");
  std::string size = connection.receive(resp_line_length);
  // redis-benchmark wrote one key of its own before.
  if (size.size() < 2 || size[0] != ':' || std::stol(size.substr(1)) < keys_for_memory)
    throw std::runtime_error("Redis holds " + size);
}

int seconds_from(const char* variable, int fallback, int least) {
  const char* text = std::getenv(variable);
  int seconds = text && *text ? std::atoi(text) : fallback;
  return std::clamp(seconds, least, 60);
}

int seconds_per_run() { return seconds_from("SCALE_BENCH_SECONDS", 3, 1); }

/// ops/s of wrk against scale-store; nullopt (with a note) when some answers were not 2xx.
std::optional<double> wrk_rate(int port, int connections, const fs::path& script, int seconds = seconds_per_run()) {
  std::string command = "wrk -t1 -c" + std::to_string(connections) + " -d" + std::to_string(seconds) +
                        "s -s " + script.string() + " http://127.0.0.1:" + std::to_string(port) +
                        "/v1/kv/bench-key 2>&1";
  std::string out = run(command);
  if (out.find("Non-2xx") != std::string::npos) {
    std::printf("  note: wrk saw non-2xx answers:\n%s\n", out.c_str());
    return std::nullopt;
  }
  auto at = out.find("Requests/sec:");
  if (at == std::string::npos) {
    std::printf("  note: unexpected wrk output:\n%s\n", out.c_str());
    return std::nullopt;
  }
  return std::stod(out.substr(at + 13));
}

/// ops/s of redis-benchmark for one test (set or get), sized to last about one run's seconds.
std::optional<double> redis_rate(int port, int connections, const std::string& test, int seconds = seconds_per_run()) {
  auto once = [&](long requests) -> std::optional<double> {
    std::string command = "redis-benchmark -h 127.0.0.1 -p " + std::to_string(port) + " -c " +
                          std::to_string(connections) + " -n " + std::to_string(requests) + " -t " + test +
                          " -d 16 -P 1 --csv 2>&1";
    std::string out = run(command);
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind("\"test\"", 0) == 0 || line.empty() || line[0] != '"') continue;
      auto comma = line.find("\",\"");
      if (comma == std::string::npos) continue;
      return std::stod(line.substr(comma + 3));
    }
    std::printf("  note: unexpected redis-benchmark output:\n%s\n", out.c_str());
    return std::nullopt;
  };
  auto probe = once(std::max(2000, connections * 200));
  if (!probe) return std::nullopt;
  return once(std::max(2000L, static_cast<long>(*probe * seconds)));
}

/// One figure: scale-store's, Redis's, the ratio, and the target (0: none).
void line(const char* what, double scale, double redis, double target, bool higher_is_better) {
  double ratio = redis > 0 ? scale / redis : 0;
  bool met = higher_is_better ? ratio >= target : ratio <= target;
  if (target > 0)
    std::printf("%-34s %14.0f %14.0f %8.2fx   %s %.1fx: %s\n", what, scale, redis, ratio,
                higher_is_better ? ">=" : "<=", target, met ? "met" : "MISSED");
  else
    std::printf("%-34s %14.0f %14.0f %8.2fx   (none)\n", what, scale, redis, ratio);
  std::fflush(stdout);
}

/// Best of two alternating runs of each side, printed and recorded (unit ops/s, peer Redis).
void compare(const char* what, const std::function<std::optional<double>()>& scale,
             const std::function<std::optional<double>()>& redis, double target, const char* peer = "redis-server") {
  std::optional<double> best_scale, best_redis;
  for (int round = 0; round < 2; ++round) {
    if (auto rate = scale(); rate && (!best_scale || *rate > *best_scale)) best_scale = rate;
    if (auto rate = redis(); rate && (!best_redis || *rate > *best_redis)) best_redis = rate;
  }
  if (!best_scale || !best_redis) {
    std::printf("%-34s skipped: a load run failed (see the note above)\n", what);
    return;
  }
  line(what, *best_scale, *best_redis, target, true);
  scale_bench::record({"store_vs_redis", what, "ops/s", *best_scale, peer, *best_redis, ">=", target});
}

/// Throughput against connections for the plot: one run per side and point.
void sweep(int scale_port, int redis_port, const fs::path& put_script, const fs::path& get_script) {
  const int seconds = seconds_from("SCALE_BENCH_SWEEP_SECONDS", 1, 0);
  if (seconds == 0) return;
  std::printf("sweep for the plot (%d s per run): connections, GET scale-store, GET redis, PUT scale-store, PUT redis\n",
              seconds);
  for (int connections = 1; connections <= 256; connections *= 2) {
    auto get_scale = wrk_rate(scale_port, connections, get_script, seconds);
    auto get_redis = redis_rate(redis_port, connections, "get", seconds);
    auto put_scale = wrk_rate(scale_port, connections, put_script, seconds);
    auto put_redis = redis_rate(redis_port, connections, "set", seconds);
    std::printf("  %4d %10.0f %10.0f %10.0f %10.0f\n", connections, get_scale.value_or(0), get_redis.value_or(0),
                put_scale.value_or(0), put_redis.value_or(0));
    if (get_scale) scale_bench::record_point("store_get_connections", "scale-store", connections, *get_scale);
    if (get_redis) scale_bench::record_point("store_get_connections", "redis", connections, *get_redis);
    if (put_scale) scale_bench::record_point("store_put_connections", "scale-store", connections, *put_scale);
    if (put_redis) scale_bench::record_point("store_put_connections", "redis", connections, *put_redis);
  }
}

/// The scale-store program measured: this build's, unless SCALE_BENCH_STORE names another.
std::string store_binary() {
  const char* other = std::getenv("SCALE_BENCH_STORE");
  return other && *other ? other : SCALE_STORE_BINARY;
}

/// True when this scale-store accepts --data-dir (the durability flags may be missing in a build).
bool scale_store_has_data_dir() {
  std::string help = run(store_binary() + " --help 2>&1");
  return help.find("--data-dir") != std::string::npos;
}

}  // namespace

int main() {
  for (const char* tool : {"redis-server", "redis-benchmark", "wrk"}) {
    if (!on_path(tool)) {
      std::printf("store_vs_redis: skipped, %s is not installed (make deps installs it)\n", tool);
      return 0;
    }
  }
  const fs::path scratch = fs::temp_directory_path() / ("scale-bench-store-" + std::to_string(::getpid()));
  fs::create_directories(scratch);
  const fs::path put_script = scratch / "put.lua";
  const fs::path get_script = scratch / "get.lua";
  std::ofstream(put_script) << "-- PUT of a 16-byte JSON value (a 14-character string and its quotes)\n"
                               "wrk.method = \"PUT\"\n"
                               "wrk.body = '\"" +
                                   value16.substr(0, 14) +
                                   "\"'\n"
                                   "wrk.headers[\"Content-Type\"] = \"application/json\"\n";
  std::ofstream(get_script) << "wrk.method = \"GET\"\n";

  std::printf("store_vs_redis: scale-store (%s) against redis-server, both on loopback, started here.\n"
              "Load: closed loop, keep-alive, one request in flight per connection, 16-byte values, one key;\n"
              "wrk -t1 for scale-store's HTTP API, redis-benchmark (one thread, -P 1) for Redis; best of two\n"
              "alternating runs of %d s each. Client and servers share this machine's %u cores.\n\n",
              store_binary().c_str(), seconds_per_run(), std::thread::hardware_concurrency());
  std::printf("%-34s %14s %14s %9s   %s\n", "measure", "scale-store", "redis", "ratio", "target");

  int status = 0;
  try {
    {
      int scale_port = support::free_loopback_port();
      Server scale("scale-store", {store_binary(), "--port", std::to_string(scale_port)}, scale_port);
      int redis_port = support::free_loopback_port();
      Server redis("redis-server",
                   {"redis-server", "--port", std::to_string(redis_port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--loglevel", "warning"},
                   redis_port);
      {
        // The GET runs read a key the PUT runs wrote; write it first so a GET alone finds it.
        Connection connection(scale_port);
        connection.send(http_request("PUT", "/v1/kv/bench-key", "\"" + value16.substr(0, 14) + "\""));
        expect_ok(connection.receive(http_response_length), "PUT /v1/kv/bench-key");
      }
      for (int connections : {50, 1}) {
        std::string put = "PUT ops/s, " + std::to_string(connections) + " conn";
        std::string get = "GET ops/s, " + std::to_string(connections) + " conn";
        const double target = 1.0;
        compare(
            put.c_str(), [&] { return wrk_rate(scale.port(), connections, put_script); },
            [&] { return redis_rate(redis.port(), connections, "set"); }, target);
        compare(
            get.c_str(), [&] { return wrk_rate(scale.port(), connections, get_script); },
            [&] { return redis_rate(redis.port(), connections, "get"); }, target);
      }

      sweep(scale.port(), redis.port(), put_script, get_script);

      std::int64_t scale_before = scale.rss(), redis_before = redis.rss();
      load_scale(scale.port());
      load_redis(redis.port());
      std::int64_t scale_after = scale.rss(), redis_after = redis.rss();
      line("RSS MiB, 1M keys x 16 B", scale_after / 1048576.0, redis_after / 1048576.0, 1.5, false);
      scale_bench::record({"store_vs_redis", "RSS, 1,000,000 keys x 16 B", "MiB", scale_after / 1048576.0,
                           "redis-server", redis_after / 1048576.0, "<=", 1.5});
      std::printf("%-34s %14.0f %14.0f   (bytes per key above the empty server's RSS)\n", "  of which per key",
                  double(scale_after - scale_before) / keys_for_memory,
                  double(redis_after - redis_before) / keys_for_memory);
    }

    if (!scale_store_has_data_dir()) {
      std::printf("%-34s skipped: this scale-store has no --data-dir (durability not built in)\n",
                  "durable PUT ops/s, 50 conn");
    } else {
      fs::create_directories(scratch / "scale-data");
      fs::create_directories(scratch / "redis-data");
      int scale_port = support::free_loopback_port();
      Server scale("scale-store",
                   {store_binary(), "--port", std::to_string(scale_port), "--data-dir",
                    (scratch / "scale-data").string(), "--fsync", "always"},
                   scale_port);
      int redis_port = support::free_loopback_port();
      Server redis(
          "redis-server",
          {"redis-server", "--port", std::to_string(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
           "yes", "--appendfsync", "always", "--dir", (scratch / "redis-data").string(), "--loglevel", "warning"},
          redis_port);
      compare(
          "durable PUT ops/s, 50 conn", [&] { return wrk_rate(scale.port(), 50, put_script); },
          [&] { return redis_rate(redis.port(), 50, "set"); }, 1.0, "redis-server appendfsync always");
    }
  } catch (const std::exception& error) {
    std::printf("store_vs_redis: %s\n", error.what());
    status = 1;
  }
  std::error_code ignored;
  fs::remove_all(scratch, ignored);
  return status;
}
