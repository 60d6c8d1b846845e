#pragma once
/// \file scale::StoreServer, the HTTP store (`scale-store`) embeddable in a program's own process.
/// The HTTP API is described in docs/http-api.md; the transport stays in src/store/store_server.cpp.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace scale {

/// When a StoreServer with a data directory calls fsync on its log (see docs/durability.md).
enum class FsyncPolicy {
  /// Acknowledge a write once it is written and fdatasync'd; concurrent writes share one fsync.
  always,
  /// Acknowledge once written to the file (a killed process loses nothing); fsync once a second,
  /// so an operating system crash or power loss may lose the last second.
  everysec,
  /// Acknowledge once written to the file; the operating system decides when it reaches disk.
  no,
};

/// What StoreServerOptions::io_threads starts as: half the machine's cores, at least one, so that
/// on a small machine the store leaves room for its clients and its log's writer (on two cores,
/// one I/O thread serves 50 local connections 20 to 30% faster than two).
unsigned default_store_io_threads() noexcept;

/// How a StoreServer listens and what it allows. The defaults are the safe ones: loopback only,
/// bounded headers, bodies, connections, read times and subscriber queues.
struct StoreServerOptions {
  /// Address to bind. Anything but a loopback address needs a token.
  std::string host = "127.0.0.1";
  /// 0 picks a free port (read it back with StoreServer::port()).
  std::uint16_t port = 0;
  /// When not empty, every request needs `Authorization: Bearer <token>` (SSE also `?token=`).
  std::string token{};
  /// Largest request body accepted, judged from Content-Length before reading (413 beyond).
  std::size_t max_body = 1024 * 1024;
  /// Connections served at once; one more gets 503 and is closed.
  std::size_t max_connections = 1024;
  /// When not empty, a web page from this origin may use the API (CORS).
  std::string cors_origin{};
  /// Host names accepted in the Host header besides the address listened on, loopback addresses
  /// and `localhost` (421 for any other: a DNS-rebinding page names its own domain).
  std::vector<std::string> allowed_hosts{};
  /// Changes kept for watches that start in the past (older ones get a `compacted` event).
  std::size_t history = 10'000;
  /// The most those changes may hold in bytes (keys and values); older ones are compacted first.
  std::size_t history_bytes = 64 * 1024 * 1024;
  /// Threads running the server's I/O (default_store_io_threads()).
  unsigned io_threads = default_store_io_threads();
  /// Time a client has to send a request's headers (also the idle keep-alive limit).
  std::chrono::milliseconds header_timeout{10'000};
  /// Time a client has to send a request's body, and a reader has to take a response.
  std::chrono::milliseconds read_timeout{30'000};
  /// A Server-Sent Events subscriber with this much unsent is disconnected.
  std::size_t max_subscriber_queue = 8 * 1024 * 1024;
  /// What every SSE subscriber may have queued in all; past it the largest queues are cut off.
  std::size_t max_queued_bytes = 256 * 1024 * 1024;
  /// Interval of the SSE keep-alive comment (which also finds subscribers that went away).
  std::chrono::milliseconds sse_heartbeat{15'000};
  /// When not empty, the store is kept durable in this directory (created if missing): an
  /// append-only log plus snapshots, replayed at construction. Empty: memory only.
  std::string data_dir{};
  /// When writes to the log are fsync'd and acknowledged (with data_dir).
  FsyncPolicy fsync = FsyncPolicy::always;
  /// The log is compacted into a snapshot once it is larger than this and than twice the last
  /// snapshot (with data_dir).
  std::uint64_t compact_min_bytes = 16 * 1024 * 1024;
  /// Serve the dashboard (the page and scale.js, compiled in) at /ui/, without a token: the files
  /// hold no data and the page sends the token on every /v1/ call. False: /ui answers 404.
  bool ui = true;
};

/// The key/value store, watches and event bus of SharedMemory and SharedEventEmitter served over
/// HTTP/1.1 on its own I/O threads. Not copyable; destroying it stops it.
class StoreServer {
 public:
  /// With options.data_dir, locks the directory and recovers the store from it; throws
  /// scale::Error when the directory is in use by another server, cannot be read or written, or
  /// holds a corrupt log or snapshot (the message names the file and byte offset).
  explicit StoreServer(StoreServerOptions options = {});
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  /// Binds and starts serving. Throws scale::Error when the options are refused (a non-loopback
  /// address without a token) or the address cannot be bound.
  void start();
  /// The bound port (useful with port 0); 0 before start().
  std::uint16_t port() const noexcept;
  /// Stops accepting, lets requests in flight finish (a few seconds at most), closes every
  /// connection and joins the I/O threads; with a data_dir, then writes and fsyncs what the log
  /// still holds and unlocks the directory. Idempotent; called by the destructor.
  void stop();

 private:
  struct Impl;
  std::shared_ptr<Impl> m_impl;
};

}  // namespace scale
