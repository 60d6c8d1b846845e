#pragma once
// WorkerStream: a cluster worker's own task stream, <tag>:worker:<id>:tasks (src/cluster/keys.hpp),
// where managers put the chunks only this worker may run: a keyed call's chunks whose key's
// rendezvous picks this worker, chunks pinned to it (broadcast), each with the setups' generation
// of its manager.
//
// Why it looks like this:
//   - One stream per worker, not per worker and manager: the worker has one more key to read,
//     however many managers route to it, and a manager needs no stream of its own per worker.
//   - The worker makes it (XGROUP CREATE ... MKSTREAM) before its first heartbeat, so a manager
//     that sees the worker live finds its stream; managers add with NOMKSTREAM, so the stream of a
//     worker that is gone is never made again by a late chunk (that XADD answers nil, and the
//     manager queues the chunk elsewhere once it finds the worker gone).
//   - Its TTL is renewed with the heartbeat, a few heartbeat TTLs long: a worker that died leaves
//     nothing for long even when no manager deletes it. A renewal that finds it gone (a Redis that
//     lost its data) makes it again.
//   - Read first, at no cost to the common case (no keyed call, no broadcast): the worker's blocking
//     read of its class streams names this stream too (one more key in a command sent anyway), so
//     a chunk on it wakes an idle worker at once; and while it has entries (XLEN at the heartbeat,
//     or a read that returned some) the worker reads it, without blocking, before its class
//     streams. A worker busy with class streams and an own stream that had nothing so far finds a
//     new own chunk within a heartbeat.
//   - Its chunks need what their call needs: the manager passes the call's resources in the entry
//     ("n"), as the worker's reader knows them for a class stream, and the worker holds them like
//     any chunk's. One that does not fit now waits on the worker (no other worker may take it)
//     instead of going back to its manager, which would send it straight back.

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "cluster/chunk_reader.hpp"
#include "cluster/held_amounts.hpp"
#include "cluster/keys.hpp"
#include "redis/redis_client.hpp"

namespace scale::detail {

/// The resources of a call as an entry's "n" field: "name=amount;..." (amounts exact, %.17g).
std::string encode_amounts(const HeldAmounts::Amounts& amounts);
/// The resources of an "n" field; names or amounts that do not parse are left out.
HeldAmounts::Amounts decode_amounts(const std::string& text);

class WorkerStream {
 public:
  WorkerStream(RedisClient& client, const ClusterKeys& keys, const std::string& worker, int ttl_ms);

  const std::string& key() const noexcept { return m_key; }

  /// Makes the stream and its group (waits for the answer). Main thread, before the first heartbeat.
  void create();
  /// With each heartbeat (I/O thread): renews the TTL (making the stream again if it is gone), and
  /// marks it active when it has entries. `present(bool)` is told whether it exists now.
  void renew(std::function<void(bool)> present);
  /// Deletes it (the worker leaves; I/O thread).
  void remove();

  /// Whether it may have entries now (the main thread reads it first then).
  bool active() const noexcept { return m_active.load(std::memory_order_relaxed); }
  /// A read of the class streams returned entries of this stream.
  void saw_entries() noexcept { m_active.store(true, std::memory_order_relaxed); }
  /// Up to `room` entries, without blocking; none clears active(). Main thread. Throws
  /// ConnectionError when Redis cannot be reached.
  std::vector<ReadChunk> read(std::size_t room);

 private:
  RedisClient& m_client;
  std::string m_key;
  std::string m_consumer;
  std::string m_ttl;
  std::atomic<bool> m_active{false};
};

}  // namespace scale::detail
