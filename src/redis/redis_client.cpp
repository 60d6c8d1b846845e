// The Redis client behind the redis:// backends: Asio on one I/O thread per client, hiredis's
// reply reader (redisReaderCreate/Feed/GetReply) and command formatter (redisFormatCommandArgv).
// See src/redis/redis_client.hpp for the roles of its connections.

#include "redis/redis_client.hpp"

#include "core/promise_callback.hpp"
#include "redis/cluster_slots.hpp"
#include "redis/command_key.hpp"
#include "redis/hash_slot.hpp"
#include "redis/redirection.hpp"

#include <algorithm>
#include <atomic>
#include <array>
#include <charconv>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <boost/asio.hpp>
#include <boost/uuid/detail/sha1.hpp>
#include <hiredis/hiredis.h>

#include <scale/detail/loop.hpp>
#include <scale/error.hpp>

namespace scale::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

RedisUrl parse_redis_url(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return Error("scale: bad Redis URL \"" + url + "\": " + why + "; the form is redis://[:password@]host:port[/db]");
  };
  constexpr std::string_view scheme = "redis://";
  if (!url.starts_with(scheme)) throw bad("it does not start with redis://");
  RedisUrl parsed;
  std::string rest = url.substr(scheme.size());
  if (auto q = rest.find('?'); q != std::string::npos) {
    std::string query = rest.substr(q + 1);
    rest.resize(q);
    std::size_t start = 0;
    while (start <= query.size()) {
      auto end = query.find('&', start);
      if (end == std::string::npos) end = query.size();
      std::string item = query.substr(start, end - start);
      if (!item.empty()) {
        auto eq = item.find('=');
        if (eq == std::string::npos) throw bad("query item '" + item + "' has no '='");
        parsed.query.emplace_back(item.substr(0, eq), item.substr(eq + 1));
      }
      start = end + 1;
    }
  }
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    std::string db = rest.substr(slash + 1);
    rest.resize(slash);
    if (!db.empty()) {
      auto [end, error] = std::from_chars(db.data(), db.data() + db.size(), parsed.db);
      if (error != std::errc() || end != db.data() + db.size() || parsed.db < 0)
        throw bad("database '" + db + "' is not a number");
    }
  }
  if (auto at = rest.rfind('@'); at != std::string::npos) {
    std::string user_info = rest.substr(0, at);
    rest = rest.substr(at + 1);
    auto colon = user_info.find(':');
    parsed.password = colon == std::string::npos ? user_info : user_info.substr(colon + 1);
  }
  if (auto colon = rest.rfind(':'); colon != std::string::npos) {
    parsed.port = rest.substr(colon + 1);
    rest.resize(colon);
    if (parsed.port.empty() || !std::all_of(parsed.port.begin(), parsed.port.end(), ::isdigit))
      throw bad("port '" + parsed.port + "' is not a number");
  }
  if (!rest.empty()) parsed.host = rest;
  parsed.text = "redis://" + parsed.host + ":" + parsed.port + (parsed.db ? "/" + std::to_string(parsed.db) : "");
  return parsed;
}

RedisScript::RedisScript(std::string text) : source(std::move(text)) {
  boost::uuids::detail::sha1 hash;
  hash.process_bytes(source.data(), source.size());
  boost::uuids::detail::sha1::digest_type digest;
  hash.get_digest(digest);
  char hex[41];
  for (int i = 0; i < 5; ++i) std::snprintf(hex + 8 * i, 9, "%08x", static_cast<unsigned>(digest[i]));
  sha1.assign(hex, 40);
}

namespace {

RedisReply convert(const redisReply* reply) {
  RedisReply out;
  switch (reply->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::string;
      out.str.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::status;
      out.str.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::error;
      out.str.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::integer;
      out.integer = reply->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::array;
      out.elements.reserve(reply->elements);
      for (std::size_t i = 0; i < reply->elements; ++i) out.elements.push_back(convert(reply->element[i]));
      break;
    default:
      out.type = RedisReply::Type::nil;
  }
  return out;
}

std::string format(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (const auto& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  char* target = nullptr;
  int length = redisFormatCommandArgv(&target, static_cast<int>(args.size()), argv.data(), lengths.data());
  if (length < 0 || !target) throw Error("scale: could not format a Redis command (out of memory)");
  std::string command(target, static_cast<std::size_t>(length));
  redisFreeCommand(target);
  return command;
}

}  // namespace

/// A command on its way: kept whole until its reply, so that a redirection can send it again.
struct PendingCommand {
  std::string command;  // RESP, as formatted
  RedisClient::Callback done;
  int slot = -1;           // the hash slot of its key, once the server is known to be a cluster
  int hops = 0;            // MOVED and ASK redirections followed
  int retries = 0;         // TRYAGAIN answers waited out
  bool asking = false;     // sent after ASKING (an ASK redirection), again after a TRYAGAIN
  bool handshake = false;  // the AUTH or SELECT of a (re)connection: never redirected, no barrier waits for it
};

namespace {

/// The name of a formatted command ("*N\r\n$L\r\nNAME\r\n..."), for messages.
std::string command_name(const std::string& command) {
  auto dollar = command.find('$');
  auto start = dollar == std::string::npos ? std::string::npos : command.find("\r\n", dollar);
  if (start == std::string::npos) return "a command";
  start += 2;
  auto end = command.find("\r\n", start);
  return end == std::string::npos ? "a command" : command.substr(start, end - start);
}

/// Whether an error reply is one the client follows (src/redis/redirection.hpp): a cheap test,
/// so that every other error costs nothing more.
bool is_redirection(const std::string& error) {
  return error.starts_with("MOVED ") || error.starts_with("ASK ") || error.starts_with("TRYAGAIN");
}

}  // namespace

/// One connection. Every member is used on the I/O thread only.
class RedisConnection {
 public:
  using Callback = RedisClient::Callback;

  RedisConnection(asio::io_context& io, const RedisUrl& url, RedisClient::Role role)
      : m_url(url), m_role(role), m_socket(io), m_resolver(io), m_timer(io) {}
  ~RedisConnection() { free_reader(); }

  /// Pub/Sub: replies go to on_push, the connection stays open.
  std::function<void(RedisReply)> on_push;
  std::function<void()> on_connect;
  std::function<void()> on_disconnect;
  bool persistent = false;
  /// Gets a command that a MOVED, ASK or TRYAGAIN answered, instead of its callback.
  std::function<void(PendingCommand, RedisReply)> on_redirect;
  /// Runs when every command submitted before set_barrier() has completed.
  std::function<void()> on_barrier_passed;

  /// Queues a command; written at once unless `corked` is given, in which case this connection
  /// is added to it (once) and the caller flushes it with uncork() after its batch.
  void submit(PendingCommand pending, std::vector<RedisConnection*>* corked = nullptr) {
    const bool answered = pending.done || m_role != RedisClient::Role::pubsub;
    if (m_state == State::connected) {
      m_out += pending.command;
      if (answered) {
        ++m_submitted;
        m_in_flight.push_back(std::move(pending));
      }
      if (!corked)
        flush();
      else if (std::find(corked->begin(), corked->end(), this) == corked->end())
        corked->push_back(this);
      return;
    }
    // NOTE: a Pub/Sub connection subscribes again in on_connect; what it sent while down is dropped.
    if (m_role != RedisClient::Role::pubsub) {
      ++m_submitted;
      m_queued.push_back(std::move(pending));
    }
    if (m_state == State::idle) begin_connect();
  }

  /// Arranges for on_barrier_passed once every command submitted so far has completed (answered,
  /// redirected or failed). False when none is outstanding, or a barrier was already set (it now
  /// waits for these too).
  bool set_barrier() {
    if (m_completed == m_submitted) return false;
    const bool fresh = m_barrier == 0;
    m_barrier = m_submitted;
    return fresh;
  }

  /// Writes what submit() queued while corked.
  void uncork() { flush(); }

  void start() {
    if (m_state == State::idle) begin_connect();
  }

  void close() {
    m_closed = true;
    ++m_generation;
    boost::system::error_code ignored;
    m_socket.close(ignored);
    m_timer.cancel();
  }

 private:
  enum class State { idle, waiting, connecting, connected };

  void begin_connect() {
    if (m_closed) return;
    if (m_backoff_ms > 0) {
      m_state = State::waiting;
      m_timer.expires_after(std::chrono::milliseconds(m_backoff_ms));
      m_timer.async_wait([this, generation = m_generation](boost::system::error_code error) {
        if (error || generation != m_generation) return;
        connect();
      });
      return;
    }
    connect();
  }

  void connect() {
    m_state = State::connecting;
    auto generation = ++m_generation;
    m_resolver.async_resolve(m_url.host, m_url.port,
                             [this, generation](boost::system::error_code error, tcp::resolver::results_type results) {
                               if (generation != m_generation) return;
                               if (error) return fail_connect(error.message());
                               asio::async_connect(
                                   m_socket, results,
                                   [this, generation](boost::system::error_code error, const tcp::endpoint&) {
                                     if (generation != m_generation) return;
                                     if (error) return fail_connect(error.message());
                                     connected();
                                   });
                             });
  }

  void connected() {
    m_state = State::connected;
    m_backoff_ms = 0;
    boost::system::error_code ignored;
    m_socket.set_option(tcp::no_delay(true), ignored);
    free_reader();
    m_reader = redisReaderCreate();
    auto handshake = [this](std::vector<std::string> args, Callback done) {
      PendingCommand pending;
      pending.done = std::move(done);
      pending.handshake = true;
      m_out += format(args);
      m_in_flight.push_back(std::move(pending));
    };
    if (!m_url.password.empty()) {
      handshake({"AUTH", m_url.password}, [this](std::exception_ptr, RedisReply reply) {
        if (reply.is_error()) drop("AUTH was refused: " + reply.str, true);
      });
    }
    if (m_url.db != 0) {
      handshake({"SELECT", std::to_string(m_url.db)}, [this](std::exception_ptr, RedisReply reply) {
        if (!reply.is_error()) return;
        // A bad database is not a connection problem that retrying mends: a plain Error.
        const std::string db = std::to_string(m_url.db);
        drop("SELECT was refused: " + reply.str, true,
             std::make_exception_ptr(Error("scale: Redis at " + m_url.text + " refused SELECT " + db + " (" +
                                           reply.str + "); a Redis Cluster has only database 0, so leave /" + db +
                                           " out of the URL there; a standalone Redis has the databases its "
                                           "`databases` setting allows")));
      });
    }
    auto queued = std::move(m_queued);
    m_queued.clear();
    for (auto& pending : queued) {
      m_out += pending.command;
      m_in_flight.push_back(std::move(pending));
    }
    read();
    flush();
    if (on_connect) on_connect();
  }

  void read() {
    m_socket.async_read_some(
        asio::buffer(m_in), [this, generation = m_generation](boost::system::error_code error, std::size_t size) {
          if (generation != m_generation) return;
          if (error) return drop(error == asio::error::eof ? "the server closed it" : error.message(), false);
          if (redisReaderFeed(m_reader, m_in.data(), size) != REDIS_OK)
            return drop(std::string("protocol error: ") + m_reader->errstr, false);
          for (;;) {
            void* raw = nullptr;
            if (redisReaderGetReply(m_reader, &raw) != REDIS_OK)
              return drop(std::string("protocol error: ") + m_reader->errstr, false);
            if (!raw) break;
            RedisReply reply = convert(static_cast<redisReply*>(raw));
            freeReplyObject(raw);
            dispatch(std::move(reply));
            if (generation != m_generation) return;  // a callback dropped or closed the connection
          }
          read();
        });
  }

  void dispatch(RedisReply reply) {
    if (m_in_flight.empty()) {
      if (on_push) on_push(std::move(reply));
      return;
    }
    PendingCommand pending = std::move(m_in_flight.front());
    m_in_flight.pop_front();
    const bool counted = !pending.handshake;
    if (counted && reply.type == RedisReply::Type::error && on_redirect && is_redirection(reply.str))
      on_redirect(std::move(pending), std::move(reply));
    else if (pending.done)
      pending.done(nullptr, std::move(reply));
    if (counted) completed(1);
  }

  void flush() {
    if (m_writing || m_out.empty() || m_state != State::connected) return;
    m_writing = true;
    m_sending.swap(m_out);
    asio::async_write(m_socket, asio::buffer(m_sending),
                      [this, generation = m_generation](boost::system::error_code error, std::size_t) {
                        if (generation != m_generation) return;
                        m_writing = false;
                        m_sending.clear();
                        if (error) return drop(error.message(), false);
                        flush();
                      });
  }

  void reset_socket() {
    ++m_generation;
    boost::system::error_code ignored;
    m_socket.close(ignored);
    m_out.clear();
    m_sending.clear();
    m_writing = false;
    m_state = State::idle;
    m_backoff_ms = std::clamp(m_backoff_ms * 2, 50, 2000);
  }

  /// The connection broke (or the handshake was refused): what was sent fails (with `error`, or a
  /// ConnectionError giving `reason`), the rest waits.
  void drop(const std::string& reason, bool refused, std::exception_ptr error = nullptr) {
    bool was_connected = m_state == State::connected;
    reset_socket();
    auto in_flight = std::move(m_in_flight);
    m_in_flight.clear();
    std::deque<PendingCommand> queued;
    if (refused) queued.swap(m_queued);
    if (!error)
      error = std::make_exception_ptr(ConnectionError("scale: lost the connection to Redis at " + m_url.text + " (" +
                                                      reason + "); a command in flight may or may not have run"));
    std::size_t count = queued.size();
    for (auto& pending : in_flight) {
      if (!pending.handshake) ++count;
      if (pending.done) pending.done(error, {});
    }
    for (auto& pending : queued)
      if (pending.done) pending.done(error, {});
    if (was_connected && on_disconnect) on_disconnect();
    if (!m_closed && m_state == State::idle && (persistent || !m_queued.empty())) begin_connect();
    completed(count);
  }

  void fail_connect(const std::string& reason) {
    reset_socket();
    auto queued = std::move(m_queued);
    m_queued.clear();
    auto error = std::make_exception_ptr(ConnectionError("scale: cannot connect to Redis at " + m_url.text + ": " +
                                                         reason + "; is redis-server running there?"));
    for (auto& pending : queued)
      if (pending.done) pending.done(error, {});
    if (!m_closed && m_state == State::idle && (persistent || !m_queued.empty())) begin_connect();
    completed(queued.size());
  }

  /// Counts commands that completed; commands complete in the order submitted.
  void completed(std::size_t count) {
    if (count == 0) return;
    m_completed += count;
    if (m_barrier != 0 && m_completed >= m_barrier) {
      m_barrier = 0;
      if (on_barrier_passed) on_barrier_passed();
    }
  }

  void free_reader() {
    if (m_reader) redisReaderFree(m_reader);
    m_reader = nullptr;
  }

  const RedisUrl& m_url;
  RedisClient::Role m_role;
  tcp::socket m_socket;
  tcp::resolver m_resolver;
  asio::steady_timer m_timer;
  State m_state = State::idle;
  bool m_closed = false;
  bool m_writing = false;
  std::uint64_t m_generation = 0;  // callbacks of an older socket see a newer number and do nothing
  int m_backoff_ms = 0;
  redisReader* m_reader = nullptr;
  std::deque<PendingCommand> m_queued;     // waiting for a connection
  std::deque<PendingCommand> m_in_flight;  // sent, in order
  std::string m_out;                       // formatted, not yet written
  std::string m_sending;                   // being written
  std::array<char, 16 * 1024> m_in{};
  std::uint64_t m_submitted = 0;  // commands submitted (handshakes and unanswered Pub/Sub sends aside)
  std::uint64_t m_completed = 0;  // of those, completed
  std::uint64_t m_barrier = 0;    // on_barrier_passed once m_completed reaches it (0: none)
};

/// One server: the node of the URL, or another node of a Redis Cluster met through a redirection.
struct RedisNode {
  explicit RedisNode(RedisUrl node_url) : url(std::move(node_url)) {}
  RedisUrl url;  // before the connections, which keep a reference to it
  std::unique_ptr<RedisConnection> connections[3];
  RedisConnection& connection(RedisClient::Role role) { return *connections[static_cast<int>(role)]; }
};

// NOTE: routing in a Redis Cluster. Until a server answers MOVED, ASK or TRYAGAIN, every command
// goes to the node of the URL and nothing is computed per command. After the first one
// (`cluster`), send() computes the hash slot of each command's key, and route() sends it to the
// node the slot map names (the node of the URL for a slot not known yet). A MOVED teaches its
// slot at once and asks for the whole map (CLUSTER SLOTS); an ASK sends ASKING and the command to
// the node it names, once, without touching the map; a TRYAGAIN sends the command again after a
// short wait. Order: a command sent after the map changed must not overtake one sent before it
// that a redirection is still carrying to the same node. So a change of the map sets a barrier on
// every connection with commands outstanding, and the role's new commands are held until those
// barriers pass; a TRYAGAIN holds them until the command it delays completes. Both are rare (the
// map changes when the cluster's slots move), and while nothing is held route() costs one test.
struct RedisClient::Impl {
  static constexpr int max_hops = 5;      // MOVED and ASK redirections followed for one command
  static constexpr int max_retries = 15;  // TRYAGAIN answers waited out: about 2.3 s in all

  explicit Impl(RedisUrl u) : url(std::move(u)), work(asio::make_work_guard(io)) {
    home = &node_at(url.host, url.port);
    // NOTE: a callback that throws (e.g. an unexpected reply) is logged; the thread goes on serving.
    thread = std::thread([this] {
      for (;;) {
        try {
          io.run();
          return;
        } catch (const std::exception& error) {
          log_error(std::string("a Redis client callback threw (ignored): ") + error.what());
        } catch (...) {
          log_error("a Redis client callback threw a non-standard exception (ignored)");
        }
      }
    });
  }
  ~Impl() { stop(); }

  void stop() {
    if (stopped.exchange(true)) return;
    asio::post(io, [this] {
      for (auto& [name, node] : nodes)
        for (auto& connection : node->connections) connection->close();
    });
    work.reset();
    io.stop();
    if (thread.get_id() == std::this_thread::get_id())
      thread.detach();  // stopped by one of its own callbacks: the thread ends after it returns
    else if (thread.joinable())
      thread.join();
    for (auto& [name, node] : nodes)
      for (auto& connection : node->connections) connection.reset();
  }

  /// The node at host:port, made (with its three connections, not yet open) on first use.
  RedisNode& node_at(const std::string& host, const std::string& port) {
    auto& node = nodes[host + ":" + port];
    if (node) return *node;
    RedisUrl node_url = url;
    if (host != url.host || port != url.port) {
      node_url.host = host;
      node_url.port = port;
      node_url.text = "redis://" + host + ":" + port + (url.db ? "/" + std::to_string(url.db) : "");
    }
    node = std::make_unique<RedisNode>(std::move(node_url));
    RedisNode& made = *node;
    for (int index = 0; index < 3; ++index) {
      const auto role = static_cast<Role>(index);
      auto& connection = made.connections[index];
      connection = std::make_unique<RedisConnection>(io, made.url, role);
      if (role == Role::pubsub) continue;  // subscriptions stay on the node of the URL, never redirected
      connection->on_redirect = [this, &made, role](PendingCommand pending, RedisReply reply) {
        redirected(made, role, std::move(pending), std::move(reply));
      };
      connection->on_barrier_passed = [this, role] { unhold(role); };
    }
    return made;
  }

  /// Sends a command to the node that holds its slot (I/O thread); with `corked`, written by
  /// the caller's uncork() after its batch (RedisConnection::submit).
  void route(Role role, PendingCommand pending, std::vector<RedisConnection*>* corked = nullptr) {
    const int index = static_cast<int>(role);
    if (role != Role::pubsub && holds[index] > 0) {
      held[index].push_back(std::move(pending));
      return;
    }
    RedisNode* node = home;
    if (pending.slot >= 0 && !slots.empty() && slots[pending.slot]) node = slots[pending.slot];
    node->connection(role).submit(std::move(pending), corked);
  }

  /// A command send() queued, with its role.
  struct Outgoing {
    Role role;
    PendingCommand pending;
  };

  /// Queues a command for the I/O thread (any thread); the first of a batch posts the drain.
  void enqueue(Role role, PendingCommand pending) {
    bool first;
    {
      std::lock_guard lock(outgoing_mutex);
      first = outgoing.empty();
      outgoing.push_back(Outgoing{role, std::move(pending)});
    }
    if (first) asio::post(io, [this] { drain(); });
  }

  /// Routes every command queued so far, in the order queued, then writes each connection's
  /// share in one write (I/O thread).
  void drain() {
    {
      std::lock_guard lock(outgoing_mutex);
      draining.swap(outgoing);
    }
    std::vector<RedisConnection*> corked;
    for (Outgoing& command : draining) route(command.role, std::move(command.pending), &corked);
    draining.clear();
    for (RedisConnection* connection : corked) connection->uncork();
  }

  void redirected(RedisNode& from, Role role, PendingCommand pending, RedisReply reply) {
    auto redirection = parse_redirection(reply.str);
    if (!redirection) {
      if (pending.done) pending.done(nullptr, std::move(reply));
      return;
    }
    cluster.store(true, std::memory_order_relaxed);
    if (redirection->kind == Redirection::Kind::tryagain) return try_again(from, role, std::move(pending), reply);
    if (pending.hops >= max_hops) {
      const std::string slot = std::to_string(redirection->slot);
      const std::string advice = "; check the cluster (redis-cli --cluster check), then retry";
      fail(pending,
           ConnectionError("scale: the Redis Cluster at " + url.text + " redirected " + command_name(pending.command) +
                           " more than " + std::to_string(max_hops) + " times (the last answer: " + reply.str +
                           "): its nodes disagree about which one holds slot " + slot + advice));
      return;
    }
    ++pending.hops;
    pending.slot = redirection->slot;
    RedisNode& target = node_at(redirection->host.empty() ? from.url.host : redirection->host, redirection->port);
    if (redirection->kind == Redirection::Kind::ask) {
      asked.fetch_add(1, std::memory_order_relaxed);
      pending.asking = true;
      target.connection(role).submit(asking());
      target.connection(role).submit(std::move(pending));
      return;
    }
    moved.fetch_add(1, std::memory_order_relaxed);
    pending.asking = false;
    const int slot = redirection->slot;
    target.connection(role).submit(std::move(pending));
    // The map request first, so that the barriers make new commands wait for the whole map too.
    refresh(from);
    if (learn(slot, target)) map_changed();
  }

  /// Waits out a TRYAGAIN (a slot half migrated), then sends the command to the same node again.
  void try_again(RedisNode& from, Role role, PendingCommand pending, const RedisReply& reply) {
    if (pending.retries >= max_retries) {
      fail(pending, ConnectionError("scale: the Redis Cluster at " + url.text + " answered " +
                                    command_name(pending.command) + " with TRYAGAIN for over 2 s (" + reply.str +
                                    "): the slot of its keys is being migrated; retry once the migration is over"));
      return;
    }
    retried.fetch_add(1, std::memory_order_relaxed);
    const int delay_ms = std::min(10 << std::min(pending.retries, 5), 200);
    ++pending.retries;
    // Newer commands of this role wait until this one completes, so that none overtakes it.
    ++holds[static_cast<int>(role)];
    pending.done = [this, role, done = std::move(pending.done)](std::exception_ptr error, RedisReply answer) {
      if (done) done(std::move(error), std::move(answer));
      unhold(role);
    };
    auto timer = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(delay_ms));
    timer->async_wait(
        [timer, &from, role, pending = std::move(pending)](boost::system::error_code error) mutable {
          if (error) return;
          if (pending.asking) from.connection(role).submit(asking());
          from.connection(role).submit(std::move(pending));
        });
  }

  /// Records that `slot` lives on `node`; true when that is news.
  bool learn(int slot, RedisNode& node) {
    if (slots.empty()) slots.assign(redis_hash_slots, nullptr);
    if (slots[slot] == &node) return false;
    slots[slot] = &node;
    return true;
  }

  /// Asks `from` for the whole slot map (one request at a time).
  void refresh(RedisNode& from) {
    if (refreshing) return;
    refreshing = true;
    PendingCommand request;
    request.command = format({"CLUSTER", "SLOTS"});
    request.done = [this, &from](std::exception_ptr error, RedisReply reply) {
      refreshing = false;
      if (error || reply.is_error()) return;  // the MOVED taught the slot that mattered; the next one asks again
      std::vector<SlotRange> ranges;
      try {
        ranges = parse_cluster_slots(reply);
      } catch (const std::exception& failure) {
        log_error(std::string("the Redis client could not read the slot map: ") + failure.what());
        return;
      }
      bool changed = false;
      for (const auto& range : ranges) {
        RedisNode& node = node_at(range.host.empty() ? from.url.host : range.host, range.port);
        for (int slot = range.first; slot <= range.last; ++slot) changed = learn(slot, node) || changed;
      }
      if (changed) map_changed();
    };
    from.connection(Role::commands).submit(std::move(request));
  }

  /// The map changed: new commands wait until every command outstanding now has completed.
  void map_changed() {
    for (auto& [name, node] : nodes)
      for (auto role : {Role::commands, Role::blocking})
        if (node->connection(role).set_barrier()) ++holds[static_cast<int>(role)];
  }

  void unhold(Role role) {
    const int index = static_cast<int>(role);
    if (holds[index] > 0) --holds[index];
    while (holds[index] == 0 && !held[index].empty()) {
      PendingCommand pending = std::move(held[index].front());
      held[index].pop_front();
      route(role, std::move(pending));
    }
  }

  static PendingCommand asking() {
    PendingCommand command;
    command.command = format({"ASKING"});
    return command;
  }

  template <class E>
  static void fail(PendingCommand& pending, E error) {
    if (pending.done) pending.done(std::make_exception_ptr(std::move(error)), {});
  }

  std::atomic<bool> stopped{false};

  // NOTE: send() queues here and only the first command of a batch posts a drain, so commands
  // sent close together (a burst of chunks, a batch of results) cost one wake-up of the I/O
  // thread and go out in one write per connection. One queue for every thread and role keeps the
  // order in which send() was called, and so each thread's order.
  std::mutex outgoing_mutex;
  std::vector<Outgoing> outgoing;  // under outgoing_mutex
  std::vector<Outgoing> draining;  // I/O thread only: the batch being routed

  RedisUrl url;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::map<std::string, std::unique_ptr<RedisNode>> nodes;  // "host:port"; made on the I/O thread after the first
  RedisNode* home = nullptr;                                // the node of the URL
  std::atomic<bool> cluster{false};                         // a redirection was seen: compute slots
  std::atomic<std::uint64_t> moved{0}, asked{0}, retried{0};
  // I/O thread only:
  std::vector<RedisNode*> slots;       // slot -> node; empty until the first MOVED
  int holds[2] = {0, 0};               // per role (commands, blocking): barriers and retries to wait for
  std::deque<PendingCommand> held[2];  // per role: commands waiting for them, in the order sent
  bool refreshing = false;
  std::thread thread;
};

RedisClient::RedisClient(RedisUrl url) : m_impl(std::make_shared<Impl>(std::move(url))) {}

RedisClient::~RedisClient() = default;

void RedisClient::stop() { m_impl->stop(); }

const RedisUrl& RedisClient::url() const noexcept { return m_impl->url; }

void RedisClient::send(Role role, std::vector<std::string> args, Callback done) {
  PendingCommand pending;
  if (role != Role::pubsub && m_impl->cluster.load(std::memory_order_relaxed)) {
    if (auto key = routing_key(args)) pending.slot = redis_hash_slot(*key);
  }
  pending.command = format(args);
  pending.done = std::move(done);
  m_impl->enqueue(role, std::move(pending));
}

void RedisClient::eval(const RedisScript& script, std::vector<std::string> keys, std::vector<std::string> args,
                       Callback done) {
  std::vector<std::string> command{"EVALSHA", script.sha1, std::to_string(keys.size())};
  command.insert(command.end(), keys.begin(), keys.end());
  command.insert(command.end(), args.begin(), args.end());
  auto retry = std::make_shared<std::vector<std::string>>(command);
  (*retry)[0] = "EVAL";
  (*retry)[1] = script.source;
  send(Role::commands, std::move(command),
       [this, retry, done = std::move(done)](std::exception_ptr error, RedisReply reply) mutable {
         // NOTE: a restarted Redis or SCRIPT FLUSH forgets scripts; EVAL runs it and loads it again.
         if (!error && reply.is_error() && reply.str.starts_with("NOSCRIPT")) {
           send(Role::commands, std::move(*retry), std::move(done));
           return;
         }
         done(error, std::move(reply));
       });
}

namespace {
RedisClient::Callback to_promise(const RedisClient& client, std::string name,
                                 const PromiseCallback<RedisReply>& bridge) {
  return bridge.callback<RedisReply>([&client, name = std::move(name)](RedisReply reply) {
    if (reply.is_error()) std::rethrow_exception(client.error_of(name, reply));
    return reply;
  });
}
}  // namespace

Future<RedisReply> RedisClient::command(std::vector<std::string> args) {
  PromiseCallback<RedisReply> bridge;
  std::string name = args.empty() ? std::string() : args.front();
  send(Role::commands, std::move(args), to_promise(*this, std::move(name), bridge));
  return std::move(bridge.future);
}

Future<RedisReply> RedisClient::run(const RedisScript& script, std::vector<std::string> keys,
                                    std::vector<std::string> args) {
  PromiseCallback<RedisReply> bridge;
  eval(script, std::move(keys), std::move(args), to_promise(*this, "EVALSHA", bridge));
  return std::move(bridge.future);
}

void RedisClient::set_pubsub_handlers(std::function<void(RedisReply)> on_push, std::function<void()> on_connect,
                                      std::function<void()> on_disconnect) {
  auto& connection = m_impl->home->connection(Role::pubsub);
  connection.on_push = std::move(on_push);
  connection.on_connect = std::move(on_connect);
  connection.on_disconnect = std::move(on_disconnect);
  connection.persistent = true;
}

void RedisClient::start_pubsub() {
  asio::post(m_impl->io, [impl = m_impl.get()] { impl->home->connection(Role::pubsub).start(); });
}

void RedisClient::post(std::function<void()> fn, int delay_ms) {
  if (delay_ms <= 0) {
    asio::post(m_impl->io, std::move(fn));
    return;
  }
  auto timer = std::make_shared<asio::steady_timer>(m_impl->io, std::chrono::milliseconds(delay_ms));
  timer->async_wait([timer, fn = std::move(fn)](boost::system::error_code error) {
    if (!error) fn();
  });
}

std::exception_ptr RedisClient::error_of(const std::string& command, const RedisReply& reply) const {
  if (reply.str.starts_with("CROSSSLOT")) {
    return std::make_exception_ptr(Error(
        "scale: the Redis Cluster at " + m_impl->url.text + " refused " + command +
        " because its keys lie in different hash slots, and one command may only touch keys of one slot (" + reply.str +
        "); put every key of one command under one hash tag, the part of its name in {braces} "
        "(every key of a redis:// SharedMemory or SharedEventEmitter is under {scale} or {scale:NAMESPACE}), "
        "or send one command per tag"));
  }
  return std::make_exception_ptr(
      Error("scale: Redis at " + m_impl->url.text + " answered " + command + " with an error: " + reply.str));
}

RedisClient::Redirections RedisClient::redirections() const noexcept {
  return {m_impl->moved.load(std::memory_order_relaxed), m_impl->asked.load(std::memory_order_relaxed),
          m_impl->retried.load(std::memory_order_relaxed)};
}

}  // namespace scale::detail
