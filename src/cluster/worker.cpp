// The worker side of the cluster: a process started with `--scale-worker redis://...` joins the
// consumer group of its build's task stream, keeps its heartbeat key alive, runs one chunk at a
// time and sends each result to the stream of the manager that queued it. See
// src/cluster/keys.hpp for the keys.

#include "cluster/keys.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <scale/detail/loop.hpp>
#include <scale/detail/task_registry.hpp>
#include <scale/detail/wire.hpp>
#include "cluster/worker.hpp"
#include "remote/build_fingerprint.hpp"
#include "remote/task_payload.hpp"
#include "remote/wire_error.hpp"

namespace scale::detail {

std::string cluster_member_id() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
  std::random_device device;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(device()));
  return std::string(host) + ":" + std::to_string(::getpid()) + ":" + suffix;
}

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) { g_stop.store(true); }

std::string host_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "unknown";
  return host;
}

/// The fields of a stream entry ([id, [name, value, ...]]) by name.
std::string field(const RedisReply& fields, std::string_view name) {
  for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2)
    if (fields.elements[i].str == name) return fields.elements[i + 1].str;
  return {};
}

/// A chunk's result as an entry of its manager's results stream (src/cluster/keys.hpp names the
/// fields), with the commands that deliver it: built from these parts whenever it is sent, so a
/// result replaced by an error is a change of `ok` and `payload`, not of a command's arguments.
struct ResultDelivery {
  std::string results_stream;  // <tag>:results:<manager>
  std::string attempt;         // the task entry's "a"
  bool ok = false;             // "k": "r" results, "e" an encoded exception
  std::string worker;          // "w": this worker's id
  std::string payload;         // "p"
  std::string tasks_stream;    // where the task entry was read from
  std::string entry_id;        // the task entry, acknowledged and removed once the result is added

  /// XADD of the result (NOMKSTREAM: a manager that is gone has no stream to fill).
  std::vector<std::string> add_result() const {
    return {"XADD", results_stream, "NOMKSTREAM", "*", "a", attempt, "k", ok ? "r" : "e", "w", worker, "p", payload};
  }

  /// add_result(), then XACK and XDEL of the task entry, in the order they are sent.
  std::vector<std::vector<std::string>> commands() const {
    return {add_result(), {"XACK", tasks_stream, cluster_group, entry_id}, {"XDEL", tasks_stream, entry_id}};
  }
};

class ClusterWorkerProcess {
 public:
  ClusterWorkerProcess(std::string url, int heartbeat_ms)
      : m_url_text(std::move(url)),
        m_client(parse_redis_url(m_url_text)),
        m_keys(cluster_keys(m_client.url(), "--scale-worker")),
        m_id(cluster_member_id()),
        m_fingerprint(build_fingerprint()),
        m_stream(m_keys.tasks(m_fingerprint)),
        m_interval_ms(std::max(10, heartbeat_ms)),
        m_ttl_ms(3 * m_interval_ms) {}

  [[noreturn]] void serve() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGTERM, &action, nullptr);
    ::sigaction(SIGINT, &action, nullptr);

    log_error("worker " + m_id + " serving " + m_client.url().text +
              (m_keys.tag == "{scale}" ? std::string() : " under " + m_keys.tag) + " (build fingerprint " +
              m_fingerprint + ")");
    m_client.post([this] { heartbeat(); });
    ensure_group();
    try {
      m_bulk_limit = bulk_limit_of(call(RedisClient::Role::commands, {"CONFIG", "GET", "proto-max-bulk-len"}));
    } catch (const std::exception&) {
      // CONFIG may be disabled: keep Redis's default.
    }
    while (!g_stop.load()) read_and_run();
    leave();
  }

 private:
  /// Sends `args` on `role` and waits for the reply; throws ConnectionError or a Redis error.
  RedisReply call(RedisClient::Role role, std::vector<std::string> args) {
    auto promise = std::make_shared<std::promise<RedisReply>>();
    auto future = promise->get_future();
    const std::string name = args.front();
    m_client.send(role, std::move(args), [this, promise, name](std::exception_ptr error, RedisReply reply) {
      if (!error && reply.is_error()) error = m_client.error_of(name, reply);
      if (error)
        promise->set_exception(error);
      else
        promise->set_value(std::move(reply));
    });
    return future.get();
  }

  /// The group on this build's stream, from its start: chunks queued before any worker came wait there.
  void ensure_group() {
    while (!g_stop.load()) {
      try {
        call(RedisClient::Role::blocking, {"XGROUP", "CREATE", m_stream, cluster_group, "0", "MKSTREAM"});
        return;
      } catch (const ConnectionError& error) {
        unreachable(error);
      } catch (const Error& error) {
        if (std::string_view(error.what()).find("BUSYGROUP") != std::string_view::npos) return;
        log_error(std::string("worker: ") + error.what());
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    }
  }

  void unreachable(const ConnectionError& error) {
    if (!m_warned_unreachable.exchange(true))
      log_error(std::string("worker ") + m_id + ": " + error.what() + "; retrying");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }

  /// Runs on the client's I/O thread every interval: the heartbeat key, the registry entry, and a
  /// look at the managers (to say once why one of another build gives this worker nothing).
  void heartbeat() {
    if (m_leaving.load()) return;
    const nlohmann::json info = {{"host", host_name()},
                                 {"pid", static_cast<int>(::getpid())},
                                 {"fingerprint", m_fingerprint},
                                 {"ttl_ms", m_ttl_ms}};
    m_client.send(RedisClient::Role::commands,
                  {"SET", m_keys.heartbeat(m_id), m_fingerprint, "PX", std::to_string(m_ttl_ms)},
                  [](std::exception_ptr, RedisReply) {});
    m_client.send(RedisClient::Role::commands, {"HSET", m_keys.workers(), m_id, info.dump()},
                  [](std::exception_ptr, RedisReply) {});
    m_client.send(RedisClient::Role::commands, {"HGETALL", m_keys.managers()},
                  [this](std::exception_ptr error, RedisReply reply) {
                    if (error || reply.is_error()) return;
                    for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
                      const std::string& manager = reply.elements[i].str;
                      const std::string& fingerprint = reply.elements[i + 1].str;
                      if (fingerprint == m_fingerprint || !m_warned_managers.insert(manager).second) continue;
                      log_error("worker " + m_id + ": manager " + manager + " runs a different build (fingerprint " +
                                fingerprint + ", this worker " + m_fingerprint +
                                "), so this worker runs none of its tasks; start workers from that manager's "
                                "very executable");
                    }
                  });
    m_client.post([this] { heartbeat(); }, m_interval_ms);
  }

  /// One XREADGROUP (pipelined behind the previous chunk's result), then the chunk it returns.
  void read_and_run() {
    std::vector<std::string> read{"XREADGROUP", "GROUP", cluster_group, m_id,     "COUNT", "1",
                                  "BLOCK",      "500",   "STREAMS",     m_stream, ">"};
    RedisReply reply;
    try {
      send_delivery();
      reply = call(RedisClient::Role::blocking, std::move(read));
      m_warned_unreachable = false;
    } catch (const ConnectionError& error) {
      unreachable(error);
      return;
    } catch (const Error& error) {
      // A restarted Redis forgot the group (NOGROUP): make it again.
      if (std::string_view(error.what()).find("NOGROUP") == std::string_view::npos)
        log_error(std::string("worker: ") + error.what());
      ensure_group();
      return;
    }
    settle_delivery();
    if (reply.is_nil() || reply.elements.empty()) return;
    if (reply.elements[0].elements.size() < 2) return;
    for (const RedisReply& entry : reply.elements[0].elements[1].elements)
      if (entry.elements.size() == 2) run(entry);
  }

  void run(const RedisReply& entry) {
    const std::string& entry_id = entry.elements[0].str;
    const RedisReply& fields = entry.elements[1];
    std::string out;
    bool ok = run_task_payload(field(fields, "p"), nullptr, nullptr, out);
    if (out.size() + redis_bulk_margin > m_bulk_limit) {
      const std::size_t size = out.size();
      out.clear();
      encode_exception(
          std::make_exception_ptr(Error("scale: Redis refused this chunk's result (" + std::to_string(size) +
                                        " bytes, more than its proto-max-bulk-len " + std::to_string(m_bulk_limit) +
                                        "); pass a smaller RunOptions::chunk_size")),
          out);
      ok = false;
    }
    m_delivery_pending = ResultDelivery{.results_stream = m_keys.results(field(fields, "m")),
                                        .attempt = field(fields, "a"),
                                        .ok = ok,
                                        .worker = m_id,
                                        .payload = std::move(out),
                                        .tasks_stream = m_stream,
                                        .entry_id = entry_id};
  }

  /// Sends the last chunk's result, acknowledgement and removal on the blocking connection, ahead
  /// of the next read, so a chunk costs one round trip. The read's reply comes after theirs; a
  /// delivery that failed (the connection dropped) is sent again before the next read.
  void send_delivery() {
    if (!m_delivery_pending) return;
    m_delivered = std::make_shared<std::atomic<bool>>(false);
    m_refused = std::make_shared<std::string>();
    auto failed = std::make_shared<std::atomic<bool>>(false);
    std::vector<std::vector<std::string>> commands = m_delivery_pending->commands();
    for (std::size_t i = 0; i < commands.size(); ++i) {
      const bool last = i + 1 == commands.size();
      // NOTE: these callbacks run before the next read's reply (one connection, in order), and
      // the main thread looks at their flags only after that reply.
      m_client.send(RedisClient::Role::blocking, std::move(commands[i]),
                    [failed, last, first = i == 0, delivered = m_delivered, refused = m_refused](
                        std::exception_ptr error, RedisReply reply) {
                      if (error) failed->store(true);
                      if (!error && first && reply.is_error()) *refused = reply.str;
                      if (last && !failed->load()) delivered->store(true);
                    });
    }
  }

  /// After a reply that came behind the delivery: done, to send again, or (Redis refused the
  /// result, e.g. too large for it) replaced by that error for the manager.
  void settle_delivery() {
    if (m_delivery_pending && !m_refused->empty()) {
      // Redis would not store the result (too large for it, say): the manager gets that error instead.
      std::string error;
      encode_exception(std::make_exception_ptr(Error("scale: Redis refused this chunk's result (" +
                                                     std::to_string(m_delivery_pending->payload.size()) + " bytes): " +
                                                     *m_refused + "; pass a smaller RunOptions::chunk_size")),
                       error);
      m_delivery_pending->ok = false;
      m_delivery_pending->payload = std::move(error);
    } else if (m_delivery_pending && m_delivered->load()) {
      m_delivery_pending.reset();
    }
  }

  /// SIGTERM or SIGINT: the running chunk is done; deliver it, leave the registry and exit.
  [[noreturn]] void leave() {
    m_leaving = true;
    try {
      for (int i = 0; i < 10 && m_delivery_pending; ++i) {
        send_delivery();
        call(RedisClient::Role::blocking, {"PING"});
        settle_delivery();
      }
      call(RedisClient::Role::commands, {"DEL", m_keys.heartbeat(m_id)});
      call(RedisClient::Role::commands, {"HDEL", m_keys.workers(), m_id});
      call(RedisClient::Role::commands, {"XGROUP", "DELCONSUMER", m_stream, cluster_group, m_id});
    } catch (const std::exception& error) {
      log_error(std::string("worker ") + m_id + " leaving: " + error.what());
    }
    std::fflush(nullptr);
    std::_Exit(0);
  }

  std::string m_url_text;
  RedisClient m_client;
  ClusterKeys m_keys;
  std::string m_id;
  std::string m_fingerprint;
  std::string m_stream;
  int m_interval_ms;
  int m_ttl_ms;
  std::atomic<bool> m_leaving{false};
  std::atomic<bool> m_warned_unreachable{false};
  std::set<std::string> m_warned_managers;           // the I/O thread's
  std::optional<ResultDelivery> m_delivery_pending;  // the last chunk's, until Redis has it
  std::shared_ptr<std::atomic<bool>> m_delivered = std::make_shared<std::atomic<bool>>(false);
  std::size_t m_bulk_limit = redis_default_bulk_limit;
  std::shared_ptr<std::string> m_refused = std::make_shared<std::string>();  // Redis's error for the result
};

}  // namespace

void serve_cluster_worker(const std::string& url, int heartbeat_ms) {
  std::unique_ptr<ClusterWorkerProcess> worker;
  try {
    worker = std::make_unique<ClusterWorkerProcess>(url, heartbeat_ms);
  } catch (const std::exception& error) {
    log_error(std::string("--scale-worker: ") + error.what());
    std::fflush(nullptr);
    std::_Exit(2);
  }
  // NOTE: never destroyed: the process ends with _Exit while the client's I/O thread still runs.
  worker.release()->serve();
}

}  // namespace scale::detail
