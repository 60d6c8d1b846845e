#pragma once
// ChunkReader: how a cluster worker takes chunks from the task streams of its build, one stream
// per requirement class and manager (src/cluster/keys.hpp), serving only the classes whose
// requirement its provides meet, within the amounts its running chunks leave free
// (cluster/held_amounts.hpp), and in turn over the streams that have work.
//
// Why it reads the way it does:
//   - One stream to read (a build with one manager and calls that need nothing: the common case)
//     is read as before any routing existed: one XREADGROUP ... COUNT <room> BLOCK 200. Nothing per
//     chunk is added.
//   - Several streams are read by one Lua script (non-blocking), which takes one entry from each
//     stream in turn, starting after the stream served last, while there is room and the amounts
//     fit (they are passed in, and the script subtracts what it takes): so two managers or classes
//     with work share the worker round robin, a class whose amount is held is skipped rather than
//     waited for (no head-of-line blocking), and no entry is read that the worker cannot start.
//   - Only when the script finds nothing does the reader block, on every stream with room, with
//     COUNT 1 (Redis answers a blocked read with the one stream that woke it). Should entries have
//     come to two streams in the instant between, the read may return one more than fits; the
//     worker gives that one back to its manager (a "b" entry), which queues it again.
//   - A class left out because its amounts are held must not wait for a blocking read on the
//     others to time out once a chunk frees them: such a read is preceded by CLIENT ID on its
//     connection, and wake() (a chunk ended, an order changed the provides) sends CLIENT UNBLOCK,
//     which ends the read at once as if it had timed out. A read with nothing held out, such as
//     every read of a worker that serves calls needing nothing, sends neither. On a Redis Cluster
//     CLIENT ID and CLIENT UNBLOCK name no key and go to the node of the URL, so a read blocked
//     on another node (a home shard elsewhere) is not ended early: it waits out its 200 ms.
//   - The streams come from the directory <tag>:classes:<fingerprint> (cluster/class_directory.hpp),
//     read at every heartbeat and whenever a blocking read found nothing: a stream that a new
//     manager or class adds is served within that time, without a scan of Redis's keys.
//   - Shards (?shards=N, N > 1; src/cluster/keys.hpp): a manager's streams of one class lie under
//     N hash tags, which a Redis Cluster may put on N nodes; one script or one XREADGROUP cannot
//     name keys of two slots there (CROSSSLOT), so the streams are read shard by shard. The
//     worker's home shard is the one rendezvous hashing picks with its id as the key (a fixed
//     choice that spreads the workers over the shards without any coordination, and that moves
//     no other worker's home when one comes or goes); it reads its home shard first, then the
//     others, each without blocking, and only when all of them had nothing does it block, on
//     its home shard alone. So each shard has its own blocked readers, and a chunk on a shard
//     that is no idle worker's home waits at most one blocking read (200 ms) for a sweep.
//     How many shards a manager has is read from its directory field, so a worker always reads
//     the streams that manager writes; a worker whose own URL names another ?shards= follows
//     the manager (its home is picked among that manager's shards) and says so once. Streams
//     that all share one tag (one shard: the default) are read exactly as above.
//   - The worker's own stream (cluster/worker_stream.hpp) is one more key of every blocking read,
//     so a chunk only this worker may run wakes it at once; the script leaves it out (the worker
//     reads it first itself, while it has entries), and a worker that serves no manager yet blocks
//     on it alone.
//   - A stream named in the directory whose group is gone (a manager killed a minute ago, or a
//     Redis restarted without its data) answers NOGROUP: it is left out for a second, and its
//     manager makes it again at its next scan if it lives.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "cluster/class_directory.hpp"
#include "cluster/held_amounts.hpp"
#include "cluster/keys.hpp"
#include "redis/redis_client.hpp"

namespace scale::detail {

/// A task entry the worker read.
struct ReadChunk {
  std::string stream;  ///< where it was read from
  std::string entry;   ///< its id there
  RedisReply fields;   ///< [name, value, ...]: m, a, g, p (src/cluster/keys.hpp)
  /// What it holds while it runs (its class's resources); empty for a chunk that needs nothing.
  HeldAmounts::Amounts need;
  /// When the read returned it (a chunk read ahead waits before it starts).
  std::chrono::steady_clock::time_point read_at = std::chrono::steady_clock::now();
};

class ChunkReader {
 public:
  ChunkReader(RedisClient& client, ClusterKeys keys, std::string fingerprint, std::string consumer);

  /// The directory as read (the reply to HGETALL <tag>:classes:<fingerprint>): the streams served
  /// from now on are its classes that the provides meet. Any thread.
  void set_directory(const RedisReply& fields);
  /// What the worker provides from now on (an order may change it). Any thread.
  void set_provides(const Provides& provides);
  /// Reads the directory now (commands connection), and waits for it. Main thread.
  void refresh();

  /// Up to `room` chunks, read as the header says; waits up to 200 ms when none is queued (or none
  /// fits). Throws ConnectionError when Redis cannot be reached, scale::Error for another refusal.
  /// Main thread.
  std::vector<ReadChunk> read(std::size_t room, HeldAmounts& amounts);

  /// Something held was released, or the provides changed: a blocking read that left out a class
  /// for its amounts ends now, so the next read sees that class. Any thread.
  void wake();

  /// The manager whose streams come first in each read from now on ("" for none): the worker's
  /// assignment (cluster/assignment.hpp), read at its heartbeat. Only the order of a read's
  /// candidates changes: that manager's streams lead, the rest follow in their turn, and with
  /// those streams empty the read is what it would have been. Any thread.
  void prefer(std::string manager_id);

  /// Every stream read from so far (a worker that leaves removes itself from their groups).
  std::vector<std::string> streams_read() const;

  /// A stream every blocking read also waits on, with its class streams: the worker's own
  /// (cluster/worker_stream.hpp), so a chunk there wakes it at once. Its entries come back with an
  /// empty need (the worker reads theirs from the entry). Main thread, before the first read.
  void watch(std::string stream);
  /// Whether the watched stream exists now (a read that finds it gone leaves it out until this
  /// says it is back). Any thread.
  void watched_present(bool present) noexcept { m_watch_present.store(present, std::memory_order_relaxed); }
  /// The manager's streams are not served from now on (a setup of it threw on this worker,
  /// cluster/worker_setups.hpp). Any thread.
  void refuse_manager(const std::string& manager);

 private:
  struct Served {
    std::string stream;
    Requirement requirement;
    std::size_t shard = 0;  ///< its hash tag, numbered among the tags served (0: the only one, with one shard)
    bool home = false;      ///< under this worker's home tag (rendezvous over its manager's shard tags)
  };
  /// A stream to read now and how many of its chunks fit.
  struct Candidate {
    const Served* served;
    std::size_t room;
  };

  using ServedList = std::vector<Served>;

  void rebuild_locked();
  std::shared_ptr<const ServedList> served_now() const;
  /// The streams to read now, in this turn's order; `held_out`: some were left out for their amounts.
  std::vector<Candidate> candidates(const ServedList& served, std::size_t room, HeldAmounts& amounts, bool& held_out);
  std::vector<ReadChunk> read_blocking(const std::vector<Candidate>& candidates, std::size_t count, bool held_out);
  /// Takes what fits of `free` (the amounts left; what is read is subtracted from it).
  std::vector<ReadChunk> read_by_script(const std::vector<Candidate>& candidates, std::size_t room,
                                        HeldAmounts::Amounts& free);
  /// Candidates under more than one tag: each shard's read alone, home first (the header says why).
  std::vector<ReadChunk> read_shards(const std::vector<Candidate>& candidates, std::size_t room,
                                     HeldAmounts& amounts, bool held_out);
  /// A non-blocking read of one shard's candidates.
  std::vector<ReadChunk> read_shard_now(const std::vector<Candidate>& candidates, std::size_t room,
                                        HeldAmounts::Amounts& free);
  /// The entries of an XREADGROUP reply, for the candidates it named.
  std::vector<ReadChunk> entries_of(RedisReply& reply, const std::vector<Candidate>& candidates);
  /// This worker's home tag for a manager with `count` shards.
  std::string home_tag(std::size_t count) const;
  /// Moves the preferred manager's streams to the front of `candidates`, keeping each part's order.
  void preferred_first(std::vector<Candidate>& candidates) const;
  void served_last(const std::string& stream);
  bool missing(const std::string& stream);

  RedisClient& m_client;
  const ClusterKeys m_keys;
  const std::string m_fingerprint;
  const std::string m_consumer;

  mutable std::mutex m_mutex;
  std::map<std::string, ManagerClasses> m_directory;  // by manager id
  Provides m_provides;
  // NOTE: replaced whole, never changed in place, so a read holds its list without copying it.
  std::shared_ptr<const ServedList> m_served = std::make_shared<const ServedList>();  // sorted by stream name
  std::set<std::string> m_read_from;
  std::set<std::string> m_told_shards;  // managers whose ?shards= differs from this worker's, told once
  std::set<std::string> m_refused;  // managers not served

  std::string m_watch;  // set before the first read
  std::atomic<bool> m_watch_present{false};
  std::string m_preferred_suffix;  // ":" + the preferred manager's id, or "" for none

  // The blocking read that wake() may end: the id of its connection while it waits (0: none).
  std::atomic<std::int64_t> m_unblock_id{0};

  // The main thread's.
  std::string m_after;  // the stream served last: the next turn starts after it
  std::map<std::string, std::chrono::steady_clock::time_point> m_missing;  // NOGROUP, left out until then
};

}  // namespace scale::detail
