// A queue past one Redis node: chunks/s of a map with chunk size 1 on a Redis Cluster of 1, 2 and
// 3 masters, each started by this benchmark (redis-server --cluster-enabled yes on free loopback
// ports, killed by their pids), with the same workers of this very binary each time and the same
// manager URL's ?shards=6 (a fixed count that 1, 2 and 3 divide). The slots are given out so that
// each master holds the same number of the six shard tags (a cluster's operator balances its
// shards the same way); the main tag, with the workers' records and the results streams, lies
// on one master whatever the count. Best of a few maps each. Target: at least 1.7x the chunks/s
// at 3 masters over 1. Figures are reported, never asserted.
//
//   make bench        (or: build/bench/cluster_shards [items, default 3000] [workers, default 3])

#include <scale/iterator.hpp>
#include <scale/managers/cluster.hpp>
#include <scale/runtime.hpp>

#include "support/redis_for_bench.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t shards = 6;
constexpr const char* name_space = "bench";

constexpr auto twice = [](int x) { return 2 * x; };

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// What redis-cli prints for `args` on the node at `port` (its last newline dropped).
std::string cli(int port, const std::string& args) {
  const std::string command = "redis-cli -p " + std::to_string(port) + " " + args + " 2>&1";
  std::string out;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    std::array<char, 4096> buffer{};
    for (std::size_t got; (got = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0;) out.append(buffer.data(), got);
    ::pclose(pipe);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

/// Whether nothing listens on 127.0.0.1:`port`.
bool bindable(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return free;
}

/// A node port that is free with its bus port (+ 10000), both below the ephemeral range.
int free_node_port(std::set<int>& taken) {
  static std::mt19937 random(static_cast<unsigned>(::getpid()));
  std::uniform_int_distribution<int> ports(12000, 22000);
  for (;;) {
    const int port = ports(random);
    if (taken.insert(port).second && bindable(port) && bindable(port + 10000)) return port;
  }
}

/// A Redis Cluster of `masters` masters made by hand (CLUSTER ADDSLOTSRANGE and MEET: redis-cli
/// --cluster create wants three at least), the slots cut so each master holds shards/masters of
/// the shard tags. Nothing when it did not come up.
class BenchCluster {
 public:
  explicit BenchCluster(std::size_t masters) : m_dir(make_dir()) {
    std::set<int> taken;
    for (std::size_t i = 0; i < masters; ++i) {
      const int port = free_node_port(taken);
      m_nodes.push_back(std::make_unique<support::RedisServer>(
          port, std::vector<std::string>{"--cluster-enabled", "yes", "--cluster-config-file",
                                         m_dir + "/nodes-" + std::to_string(port) + ".conf", "--cluster-node-timeout",
                                         "1000"}));
    }
    // The shard tags' slots, in order; master k takes the slots up to the last of its tags.
    std::vector<int> slots;
    for (std::size_t i = 0; i < shards; ++i)
      slots.push_back(std::stoi(cli(port(0), "CLUSTER KEYSLOT '{scale:" + std::string(name_space) + "#s" +
                                                 std::to_string(i) + "}'")));
    std::sort(slots.begin(), slots.end());
    int first = 0;
    for (std::size_t k = 0; k < masters; ++k) {
      const std::size_t last_tag = (k + 1) * shards / masters - 1;
      const int last = k + 1 == masters ? 16383 : (slots[last_tag] + slots[last_tag + 1]) / 2;
      cli(port(k), "CLUSTER ADDSLOTSRANGE " + std::to_string(first) + " " + std::to_string(last));
      m_tags_per_master.push_back(static_cast<std::size_t>(
          std::count_if(slots.begin(), slots.end(), [&](int slot) { return slot >= first && slot <= last; })));
      first = last + 1;
    }
    for (std::size_t k = 1; k < masters; ++k) cli(port(0), "CLUSTER MEET 127.0.0.1 " + std::to_string(port(k)));
    const auto deadline = Clock::now() + 30s;
    while (!ready()) {
      if (Clock::now() > deadline) throw std::runtime_error("the Redis Cluster did not come up within 30 s");
      std::this_thread::sleep_for(20ms);
    }
  }
  ~BenchCluster() {
    m_nodes.clear();  // each server stopped by its pid
    std::error_code ignored;
    std::filesystem::remove_all(m_dir, ignored);
  }

  int port(std::size_t node) const { return m_nodes.at(node)->port(); }
  std::string url() const { return m_nodes.front()->url(); }

  /// How many of the shard tags each master holds.
  const std::vector<std::size_t>& tags_per_master() const { return m_tags_per_master; }

 private:
  static std::string make_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "scale-bench-cluster-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    return pattern;
  }

  /// Every node says cluster_state:ok and knows every other.
  bool ready() {
    for (std::size_t node = 0; node < m_nodes.size(); ++node) {
      const std::string info = cli(port(node), "CLUSTER INFO");
      if (info.find("cluster_state:ok") == std::string::npos ||
          info.find("cluster_known_nodes:" + std::to_string(m_nodes.size())) == std::string::npos)
        return false;
    }
    return true;
  }

  std::string m_dir;
  std::vector<std::unique_ptr<support::RedisServer>> m_nodes;
  std::vector<std::size_t> m_tags_per_master;
};

/// Whether `count` workers joined within 20 s (else says so).
bool joined(const scale::ClusterManager& manager, std::size_t count) {
  const auto deadline = Clock::now() + 20s;
  while (manager.stats().workers_alive < count) {
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "cluster_shards: %zu workers did not join within 20 s\n", count);
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

/// Chunks/s of the best of `runs` maps of `items` with chunk size 1, or nothing when a result is wrong.
std::optional<double> best_rate(scale::ClusterManager& manager, std::size_t items, int runs) {
  std::vector<int> values(items);
  std::iota(values.begin(), values.end(), 0);
  scale::Iterator<int> numbers(values, manager);
  scale::RunOptions options;
  options.chunk_size = 1;
  double best = 0;
  for (int run = 0; run < runs; ++run) {
    const auto start = Clock::now();
    const std::vector<int> result = numbers.map(twice, options).get();
    const double rate = static_cast<double>(items) / seconds_since(start);
    if (result.size() != items) return std::nullopt;
    for (std::size_t i = 0; i < items; ++i)
      if (result[i] != 2 * static_cast<int>(i)) return std::nullopt;
    best = std::max(best, rate);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // as a --scale-worker: serves tasks until SIGTERM, then exits
  const std::size_t items = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 3000;
  const std::size_t worker_count = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 3;
  if (items == 0 || worker_count == 0) {
    std::fprintf(stderr, "usage: cluster_shards [items > 0] [workers > 0]\n");
    return 2;
  }
  if (!bench::have("redis-server") || !bench::have("redis-cli")) {
    std::printf("cluster_shards: skipped, redis-server or redis-cli not found (make deps installs them)\n");
    return 0;
  }
  std::printf("cluster_shards: a map of %zu trivial items, chunk size 1, %zu workers, ?shards=%zu\n", items,
              worker_count, shards);
  {
    // Today's layout for comparison: one redis-server, no cluster, one shard.
    support::RedisServer server;
    const std::string url = server.url() + "?namespace=" + name_space;
    std::vector<std::unique_ptr<bench::WorkerProcess>> workers;
    for (std::size_t i = 0; i < worker_count; ++i) workers.push_back(std::make_unique<bench::WorkerProcess>(url));
    scale::ClusterManager manager(url);
    if (!joined(manager, worker_count)) return 1;
    if (!best_rate(manager, 100, 1)) return 1;  // warm
    const auto best = best_rate(manager, items, 3);
    if (!best) return 1;
    std::printf("  one redis-server, one shard: %8.0f chunks/s  (for comparison)\n", *best);
  }
  std::vector<double> rates;
  for (std::size_t masters = 1; masters <= 3; ++masters) {
    BenchCluster cluster(masters);
    const std::string url = cluster.url() + "?namespace=" + name_space + "&shards=" + std::to_string(shards);
    std::vector<std::unique_ptr<bench::WorkerProcess>> workers;
    for (std::size_t i = 0; i < worker_count; ++i) workers.push_back(std::make_unique<bench::WorkerProcess>(url));
    double rate = 0;
    {
      scale::ClusterManager manager(url);
      if (!joined(manager, worker_count)) return 1;
      if (!best_rate(manager, 100, 1)) return 1;  // warm
      const auto best = best_rate(manager, items, 3);
      if (!best) {
        std::fprintf(stderr, "cluster_shards: a wrong result\n");
        return 1;
      }
      rate = *best;
    }
    std::string spread;
    for (std::size_t count : cluster.tags_per_master()) spread += (spread.empty() ? "" : "+") + std::to_string(count);
    std::printf("  %zu master(s): %8.0f chunks/s  (shard tags per master: %s)\n", masters, rate, spread.c_str());
    rates.push_back(rate);
    workers.clear();  // SIGTERM, then SIGKILL after 5 s, before the cluster goes
  }
  const double ratio = rates[2] / rates[0];
  std::printf("  3 masters over 1: %.2fx   target: >= 1.70x   %s\n", ratio, ratio >= 1.7 ? "met" : "NOT met");
  std::printf("  2 masters over 1: %.2fx\n", rates[1] / rates[0]);
  return 0;
}
