#pragma once
// A Redis client for the redis:// backends (src/redis/redis_client.cpp): Asio on its own I/O thread,
// hiredis's reply reader and command formatter (RESP2), no Asio or hiredis in this header.
//
// One RedisClient holds up to three connections per server, one per role, each opened on first
// use and reopened with backoff after it drops:
//   Role::commands   pipelined commands, replies completing callbacks in the order sent;
//   Role::blocking   blocking reads (XREAD BLOCK), so they never hold up the commands;
//   Role::pubsub     Pub/Sub: every reply goes to the push handler, and the connect handler
//                    runs after each (re)connection so the owner can subscribe again.
// Callbacks and handlers run on the client's I/O thread; they must not block it.
//
// A Redis Cluster: the URL names one node. The client follows MOVED (remembering the slot's node
// and reading the whole map with CLUSTER SLOTS), ASK (ASKING, then the command, on the node named,
// once) and TRYAGAIN (the same command again, waiting at most about 2 s), at most 5 redirections
// per command (then scale::ConnectionError). Once a server has redirected, each command on the
// commands and blocking roles goes straight to the node of its first key's slot; commands without
// a key, and the Pub/Sub role, stay on the node of the URL (a cluster passes every PUBLISH to
// every node). A redirected command completes when the node that holds its slot answers, so the
// order of replies holds per slot: commands for one slot (every key of a redis:// SharedMemory or
// SharedEventEmitter shares one) reach Redis and complete in the order sent. A standalone Redis
// never redirects, and then nothing of this runs. docs/routing.md, "Redis Cluster".

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <scale/future.hpp>

namespace scale::detail {

/// A reply, converted from hiredis's redisReply.
struct RedisReply {
  enum class Type { string, array, integer, nil, status, error };
  Type type = Type::nil;
  std::string str;  // string, status and error replies
  std::int64_t integer = 0;
  std::vector<RedisReply> elements;

  bool is_error() const noexcept { return type == Type::error; }
  bool is_nil() const noexcept { return type == Type::nil; }
};

/// The parts of `redis://[:password@]host:port[/db][?name=value&...]`.
struct RedisUrl {
  std::string host = "127.0.0.1";
  std::string port = "6379";
  std::string password;
  int db = 0;
  std::vector<std::pair<std::string, std::string>> query;  // e.g. namespace, history
  std::string text;                                        // the URL as given, without the password (for messages)
};

/// Parses a redis:// URL; throws scale::Error saying what is wrong.
RedisUrl parse_redis_url(const std::string& url);

/// A Lua script run with EVALSHA; its SHA-1 is computed here, and after NOSCRIPT (a restarted
/// Redis, SCRIPT FLUSH) the client sends it once more with EVAL, which loads it again.
struct RedisScript {
  explicit RedisScript(std::string source);
  std::string source;
  std::string sha1;
};

class RedisClient {
 public:
  enum class Role { commands = 0, blocking = 1, pubsub = 2 };
  /// Called with the reply (a Redis error is a reply of Type::error) or with the error that kept
  /// the command from being answered (scale::ConnectionError naming the URL).
  using Callback = std::function<void(std::exception_ptr, RedisReply)>;

  explicit RedisClient(RedisUrl url);
  /// Closes every connection and joins the I/O thread; callbacks still waiting are dropped.
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  /// What the destructor does, for an owner whose callbacks use the client: once it returns, no
  /// callback runs any more, and the client may then be destroyed. Idempotent.
  /// NOTE: an owner must not destroy the client through unique_ptr::reset() while callbacks may
  /// still run: reset() clears the pointer before the destructor joins the I/O thread, so a
  /// callback that sends again would see a null client. Call stop() first.
  void stop();

  const RedisUrl& url() const noexcept;

  /// Sends a command on the connection of `role`; `done` gets its reply. Any thread; commands
  /// sent from one thread reach Redis in the order sent (in a cluster: per slot).
  void send(Role role, std::vector<std::string> args, Callback done);
  /// Runs a script (EVALSHA, reloaded after NOSCRIPT) on the commands connection.
  void eval(const RedisScript& script, std::vector<std::string> keys, std::vector<std::string> args, Callback done);

  /// A command on the commands connection as a Future; a Redis error fails it with scale::Error
  /// carrying Redis's message.
  Future<RedisReply> command(std::vector<std::string> args);
  /// A script as a Future (as command()).
  Future<RedisReply> run(const RedisScript& script, std::vector<std::string> keys, std::vector<std::string> args);

  /// The Pub/Sub connection: `on_push` gets every reply it receives (subscribe confirmations and
  /// messages), `on_connect` runs after each (re)connection, `on_disconnect` when it drops. Set
  /// once, before the first send on Role::pubsub; the connection then stays open (and reconnects
  /// with backoff) until the client is destroyed.
  void set_pubsub_handlers(std::function<void(RedisReply)> on_push, std::function<void()> on_connect,
                           std::function<void()> on_disconnect);
  /// Opens the Pub/Sub connection (after set_pubsub_handlers).
  void start_pubsub();

  /// Runs `fn` on the I/O thread (after `delay_ms`).
  void post(std::function<void()> fn, int delay_ms = 0);

  /// The scale::Error for a Redis error reply: "Redis (<url>) answered <command>: <message>"; for
  /// CROSSSLOT, one that says to keep a command's keys under one hash tag.
  std::exception_ptr error_of(const std::string& command, const RedisReply& reply) const;

  /// How many redirections the client has followed (a standalone Redis: none).
  struct Redirections {
    std::uint64_t moved = 0;
    std::uint64_t ask = 0;
    std::uint64_t tryagain = 0;
  };
  Redirections redirections() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> m_impl;
};

class MemoryBackend;
class EventBackend;

/// The redis:// backends (src/redis/redis_memory.cpp, src/redis/redis_events.cpp); see docs/redis.md.
std::shared_ptr<MemoryBackend> make_redis_memory(const std::string& url);
std::shared_ptr<EventBackend> make_redis_events(const std::string& url);

}  // namespace scale::detail
