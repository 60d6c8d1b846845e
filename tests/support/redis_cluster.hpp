#pragma once
// A Redis Cluster of three masters of the test's own: three `redis-server --cluster-enabled yes`
// (support::RedisServer, so each is started the same way as the single server and stopped by its
// pid) on free loopback ports, joined by `redis-cli --cluster create ... --cluster-replicas 0
// --cluster-yes`, ready once every node answers CLUSTER INFO with cluster_state:ok. The shared
// one starts once per test executable (about 1.5 s: redis-cli waits in steps of a second for the
// nodes to agree) and is stopped when the executable exits.
//
// Ports: a node's cluster bus listens on its port + 10000, so a node port is at most 55535; they
// are drawn from 12000-22000, which keeps both below the ephemeral range (32768 on) where the
// kernel picks ports for outgoing connections. Node timeout 1 s: redis-cli's join and the
// nodes' agreement take a second instead of three (at 5 s, Redis's default), and a loaded machine
// still answers the nodes' pings within it.
//
// Checks and administration (CLUSTER KEYSLOT, CLUSTER SLOTS, SETSLOT, MIGRATE) go through
// hiredis's synchronous API, not through the client under test.

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "redis_server.hpp"
#include "spawn.hpp"

namespace support {

class RedisCluster {
 public:
  static constexpr std::size_t size = 3;

  RedisCluster() : m_dir(make_dir()) {
    try {
      start();
    } catch (...) {
      shut_down();
      throw;
    }
  }
  ~RedisCluster() { shut_down(); }
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  /// The cluster every test of this executable shares.
  static RedisCluster& shared() {
    static RedisCluster cluster;
    return cluster;
  }

  int port(std::size_t node) const { return m_nodes.at(node).port; }
  std::string url(std::size_t node) const { return "redis://127.0.0.1:" + std::to_string(port(node)); }
  /// The node's id (CLUSTER MYID).
  const std::string& id(std::size_t node) const { return m_nodes.at(node).id; }

  /// A reply of hiredis's, freed with it.
  using Reply = std::unique_ptr<redisReply, void (*)(void*)>;

  /// Runs a command on `node`; throws std::runtime_error for an error reply or a lost connection.
  Reply command(std::size_t node, const std::vector<std::string>& args) {
    auto& context = m_nodes.at(node).context;
    if (!context) context = connect(port(node));
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    Reply reply(static_cast<redisReply*>(
                    redisCommandArgv(context.get(), static_cast<int>(args.size()), argv.data(), lengths.data())),
                freeReplyObject);
    if (!reply) {
      context.reset();
      throw std::runtime_error("lost the connection to cluster node " + std::to_string(port(node)));
    }
    if (reply->type == REDIS_REPLY_ERROR)
      throw std::runtime_error(args.front() + " on node " + std::to_string(port(node)) + ": " +
                               std::string(reply->str, reply->len));
    return reply;
  }

  /// A command's reply as text: a string or status as it is, an integer in decimal.
  std::string text(std::size_t node, const std::vector<std::string>& args) {
    auto reply = command(node, args);
    if (reply->type == REDIS_REPLY_INTEGER) return std::to_string(reply->integer);
    if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS)
      return std::string(reply->str, reply->len);
    throw std::runtime_error(args.front() + ": not a string or integer reply");
  }

  /// Redis's own hash slot for `key` (CLUSTER KEYSLOT).
  int keyslot(const std::string& key) { return std::stoi(text(0, {"CLUSTER", "KEYSLOT", key})); }

  /// The node that holds `slot`, as node `asked` sees it (CLUSTER SLOTS).
  std::size_t owner(int slot, std::size_t asked = 0) {
    auto reply = command(asked, {"CLUSTER", "SLOTS"});
    for (std::size_t i = 0; i < reply->elements; ++i) {
      const redisReply* range = reply->element[i];
      if (range->elements < 3 || slot < range->element[0]->integer || slot > range->element[1]->integer) continue;
      const auto owner_port = static_cast<int>(range->element[2]->element[1]->integer);
      for (std::size_t node = 0; node < size; ++node)
        if (port(node) == owner_port) return node;
    }
    throw std::runtime_error("no node of the cluster holds slot " + std::to_string(slot));
  }

  /// Whether every node reports cluster_state:ok.
  bool healthy() {
    for (std::size_t node = 0; node < size; ++node)
      if (text(node, {"CLUSTER", "INFO"}).find("cluster_state:ok") == std::string::npos) return false;
    return true;
  }

 private:
  using Context = std::unique_ptr<redisContext, void (*)(redisContext*)>;

  struct Node {
    int port = 0;
    std::string id;
    std::unique_ptr<RedisServer> server;
    Context context{nullptr, redisFree};
  };

  static std::string make_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "scale-redis-cluster-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    return pattern;
  }

  static Context connect(int port) {
    timeval timeout{5, 0};
    Context context(redisConnectWithTimeout("127.0.0.1", port, timeout), redisFree);
    if (!context || context->err)
      throw std::runtime_error("cannot connect to cluster node " + std::to_string(port) +
                               (context ? std::string(": ") + context->errstr : std::string()));
    redisSetTimeout(context.get(), timeout);
    return context;
  }

  /// Whether nothing listens on 127.0.0.1:`port` (binding it succeeds).
  static bool bindable(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    return free;
  }

  /// A node port that is free, and whose bus port (+10000) is free too.
  static int free_node_port(std::set<int>& taken) {
    static std::mt19937 random(static_cast<unsigned>(::getpid()) ^
                               static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
    std::uniform_int_distribution<int> ports(12000, 22000);
    for (int attempt = 0; attempt < 1000; ++attempt) {
      const int port = ports(random);
      if (taken.count(port) || !bindable(port) || !bindable(port + 10000)) continue;
      taken.insert(port);
      return port;
    }
    throw std::runtime_error("no free pair of loopback ports (node, node + 10000) for a Redis Cluster node");
  }

  static std::string program_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
      auto end = dirs.find(':', start);
      if (end == std::string::npos) end = dirs.size();
      auto candidate = std::filesystem::path(dirs.substr(start, end - start)) / name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
      start = end + 1;
    }
    throw std::runtime_error(name + " is not on PATH (make deps installs redis-tools)");
  }

  void start() {
    std::set<int> taken;
    for (std::size_t i = 0; i < size; ++i) {
      Node node;
      node.port = free_node_port(taken);
      const std::string config = m_dir + "/nodes-" + std::to_string(node.port) + ".conf";
      node.server = std::make_unique<RedisServer>(
          node.port, std::vector<std::string>{"--cluster-enabled", "yes", "--cluster-config-file", config,
                                              "--cluster-node-timeout", "1000"});
      m_nodes.push_back(std::move(node));
    }
    create();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!healthy()) {
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("the Redis Cluster did not reach cluster_state:ok within 20 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (std::size_t node = 0; node < size; ++node) m_nodes[node].id = text(node, {"CLUSTER", "MYID"});
  }

  /// redis-cli --cluster create, waited for (at most 30 s) and checked.
  void create() {
    std::vector<std::string> args{"--cluster", "create"};
    for (const auto& node : m_nodes) args.push_back("127.0.0.1:" + std::to_string(node.port));
    for (const char* arg : {"--cluster-replicas", "0", "--cluster-yes"}) args.emplace_back(arg);
    int log = -1;
    const pid_t pid = spawn_with_log(program_path("redis-cli").c_str(), args, log, true);
    std::string output;
    char buffer[4096];
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      // Its output is a few kilobytes; read it as it comes so that a full pipe never stalls it.
      pollfd ready{log, POLLIN, 0};
      if (::poll(&ready, 1, 20) > 0) {
        const auto got = ::read(log, buffer, sizeof buffer);
        if (got > 0) output.append(buffer, static_cast<std::size_t>(got));
      }
      if (::waitpid(pid, &status, WNOHANG) == pid) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        ::close(log);
        throw std::runtime_error("redis-cli --cluster create did not finish within 30 s:\n" + output);
      }
    }
    for (ssize_t got; (got = ::read(log, buffer, sizeof buffer)) > 0;)
      output.append(buffer, static_cast<std::size_t>(got));
    ::close(log);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      throw std::runtime_error("redis-cli --cluster create failed:\n" + output);
  }

  void shut_down() {
    for (auto& node : m_nodes) {
      node.context.reset();
      node.server.reset();  // stops that server by its pid
    }
    m_nodes.clear();
    std::error_code ignored;
    std::filesystem::remove_all(m_dir, ignored);
  }

  std::string m_dir;
  std::vector<Node> m_nodes;
};

}  // namespace support
