// The Redis client behind the redis:// backends: Asio on one I/O thread per client, hiredis's
// reply reader (redisReaderCreate/Feed/GetReply) and command formatter (redisFormatCommandArgv).
// See src/redis/redis_client.hpp for the roles of its connections.

#include "redis/redis_client.hpp"

#include "core/promise_callback.hpp"

#include <algorithm>
#include <atomic>
#include <array>
#include <charconv>
#include <cstdio>
#include <deque>
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

/// One connection. Every member is used on the I/O thread only.
class RedisConnection {
 public:
  using Callback = RedisClient::Callback;

  RedisConnection(asio::io_context& io, const RedisUrl& url, RedisClient::Role role)
      : m_io(io), m_url(url), m_role(role), m_socket(io), m_resolver(io), m_timer(io) {}
  ~RedisConnection() { free_reader(); }

  /// Pub/Sub: replies go to on_push, the connection stays open.
  std::function<void(RedisReply)> on_push;
  std::function<void()> on_connect;
  std::function<void()> on_disconnect;
  bool persistent = false;

  void submit(std::string command, Callback done) {
    if (m_state == State::connected) {
      if (done || m_role != RedisClient::Role::pubsub) m_in_flight.push_back(std::move(done));
      m_out += command;
      flush();
      return;
    }
    // NOTE: a Pub/Sub connection subscribes again in on_connect; what it sent while down is dropped.
    if (m_role != RedisClient::Role::pubsub) m_queued.emplace_back(std::move(command), std::move(done));
    if (m_state == State::idle) begin_connect();
  }

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
    auto handshake = [this](const char* what) {
      return [this, what](std::exception_ptr, RedisReply reply) {
        if (reply.is_error()) drop(std::string(what) + " was refused: " + reply.str, true);
      };
    };
    if (!m_url.password.empty()) {
      m_in_flight.push_back(handshake("AUTH"));
      m_out += format({"AUTH", m_url.password});
    }
    if (m_url.db != 0) {
      m_in_flight.push_back(handshake("SELECT"));
      m_out += format({"SELECT", std::to_string(m_url.db)});
    }
    auto queued = std::move(m_queued);
    m_queued.clear();
    for (auto& [command, done] : queued) {
      m_in_flight.push_back(std::move(done));
      m_out += command;
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
    if (!m_in_flight.empty()) {
      auto done = std::move(m_in_flight.front());
      m_in_flight.pop_front();
      if (done) done(nullptr, std::move(reply));
      return;
    }
    if (on_push) on_push(std::move(reply));
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

  /// The connection broke (or the handshake was refused): what was sent fails, the rest waits.
  void drop(const std::string& reason, bool refused) {
    bool was_connected = m_state == State::connected;
    reset_socket();
    auto in_flight = std::move(m_in_flight);
    m_in_flight.clear();
    std::deque<std::pair<std::string, Callback>> queued;
    if (refused) queued.swap(m_queued);
    auto error = std::make_exception_ptr(ConnectionError("scale: lost the connection to Redis at " + m_url.text + " (" +
                                                         reason + "); a command in flight may or may not have run"));
    for (auto& done : in_flight)
      if (done) done(error, {});
    for (auto& [command, done] : queued)
      if (done) done(error, {});
    if (was_connected && on_disconnect) on_disconnect();
    if (!m_closed && (persistent || !m_queued.empty())) begin_connect();
  }

  void fail_connect(const std::string& reason) {
    reset_socket();
    auto queued = std::move(m_queued);
    m_queued.clear();
    auto error = std::make_exception_ptr(ConnectionError("scale: cannot connect to Redis at " + m_url.text + ": " +
                                                         reason + "; is redis-server running there?"));
    for (auto& [command, done] : queued)
      if (done) done(error, {});
    if (!m_closed && (persistent || !m_queued.empty())) begin_connect();
  }

  void free_reader() {
    if (m_reader) redisReaderFree(m_reader);
    m_reader = nullptr;
  }

  asio::io_context& m_io;
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
  std::deque<std::pair<std::string, Callback>> m_queued;  // waiting for a connection
  std::deque<Callback> m_in_flight;                       // sent, in order
  std::string m_out;                                      // formatted, not yet written
  std::string m_sending;                                  // being written
  std::array<char, 16 * 1024> m_in{};
};

struct RedisClient::Impl {
  explicit Impl(RedisUrl u) : url(std::move(u)), work(asio::make_work_guard(io)) {
    for (int role = 0; role < 3; ++role)
      connections[role] = std::make_unique<RedisConnection>(io, url, static_cast<Role>(role));
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
      for (auto& connection : connections) connection->close();
    });
    work.reset();
    io.stop();
    if (thread.get_id() == std::this_thread::get_id())
      thread.detach();  // stopped by one of its own callbacks: the thread ends after it returns
    else if (thread.joinable())
      thread.join();
    connections[0].reset();
    connections[1].reset();
    connections[2].reset();
  }

  std::atomic<bool> stopped{false};

  RedisUrl url;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::unique_ptr<RedisConnection> connections[3];
  std::thread thread;
};

RedisClient::RedisClient(RedisUrl url) : m_impl(std::make_shared<Impl>(std::move(url))) {}

RedisClient::~RedisClient() = default;

void RedisClient::stop() { m_impl->stop(); }

const RedisUrl& RedisClient::url() const noexcept { return m_impl->url; }

void RedisClient::send(Role role, std::vector<std::string> args, Callback done) {
  std::string command = format(args);
  asio::post(m_impl->io, [impl = m_impl.get(), role, command = std::move(command), done = std::move(done)]() mutable {
    impl->connections[static_cast<int>(role)]->submit(std::move(command), std::move(done));
  });
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
  auto& connection = *m_impl->connections[static_cast<int>(Role::pubsub)];
  connection.on_push = std::move(on_push);
  connection.on_connect = std::move(on_connect);
  connection.on_disconnect = std::move(on_disconnect);
  connection.persistent = true;
}

void RedisClient::start_pubsub() {
  asio::post(m_impl->io, [impl = m_impl.get()] { impl->connections[static_cast<int>(Role::pubsub)]->start(); });
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
  return std::make_exception_ptr(
      Error("scale: Redis at " + m_impl->url.text + " answered " + command + " with an error: " + reply.str));
}

}  // namespace scale::detail
