#pragma once
// scale-store's durability: an append-only log of checksummed records in a data directory,
// snapshots that compact it, recovery at start, and the journal the in-process backend writes
// through (src/store/store_log.cpp). The format and the rules are described in docs/durability.md.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <scale/detail/memory_backend.hpp>
#include <scale/store_server.hpp>

#include "store/completion_thread.hpp"

namespace scale::detail {

/// CRC-32C (Castagnoli) of `bytes`, continuing from `crc` (0 to start).
std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc = 0) noexcept;

/// What a record holds.
enum class RecordKind : std::uint8_t {
  write = 1,           ///< one write: its changes, all of one revision (a snapshot's entries too)
  snapshot_begin = 2,  ///< first record of a snapshot: the store's revision, no changes
  snapshot_end = 3,    ///< last record of a snapshot (a snapshot without it is incomplete)
  /// First record of a log or snapshot file (files written before it existed have none): the
  /// generation the file was made for, and a log's first revision or a snapshot's revision.
  header = 4,
};

/// One key's change in a record. `value` is the JSON text of the value (empty for an erase).
struct LogChange {
  std::string key;
  std::string value;
  bool erased = false;
};

/// A decoded record and where it lies in the bytes it was decoded from.
struct LogRecord {
  RecordKind kind = RecordKind::write;
  Revision revision = 0;
  std::int64_t timestamp_ms = 0;
  std::vector<LogChange> changes;
  std::uint64_t generation = 0;  ///< a header's (0 for every other kind)
  std::size_t offset = 0;        ///< of its first byte
  std::size_t size = 0;          ///< in bytes, header included
};

/// How the bytes after the last valid record look.
enum class LogTail {
  clean,    ///< there are none
  torn,     ///< the end of an interrupted write (incomplete, zeros, or a bad last record): drop it
  corrupt,  ///< a bad record with more data after it: the log cannot be trusted past it
};

/// What decode_log() found.
struct DecodedLog {
  std::vector<LogRecord> records;
  std::size_t valid_end = 0;  ///< where the last valid record ends
  LogTail tail = LogTail::clean;
  std::string problem;  ///< what is wrong at valid_end (empty when clean)
};

/// Largest record payload accepted (a bigger length field means a damaged header).
inline constexpr std::size_t max_record_payload = 1ull << 30;
/// Bytes before a record's payload: length, checksum of the length, checksum of the payload.
inline constexpr std::size_t record_header_size = 12;

/// Decodes records from the start of `bytes` (a whole log or snapshot file) until the first that
/// is not valid. Pure: no I/O, any input (recovery and the fuzz target use it).
DecodedLog decode_log(std::string_view bytes);

/// What the bytes after a log's last valid record still show: recovery drops them and says so.
struct DroppedTail {
  std::size_t bytes = 0;    ///< dropped, from the last valid record's end to the end of the file
  std::size_t records = 0;  ///< record headers seen in them: at least this many records are dropped
  /// True when every dropped byte belongs to a record that was seen, so `records` is exact; false
  /// when bytes follow (zeros, or a damaged header) that cannot tell how many records they held.
  bool counted = true;
  std::size_t uncounted_bytes = 0;  ///< those bytes
};

/// Reads the headers left in `bytes` from `from` (a DecodedLog's valid_end) to the end. Pure.
DroppedTail inspect_dropped(std::string_view bytes, std::size_t from);

/// Appends one record to `out`: begin with the kind, revision and time, add() its changes, then
/// finish(). The only encoder of the format.
class RecordEncoder {
 public:
  RecordEncoder(std::string& out, RecordKind kind, Revision revision, std::int64_t timestamp_ms);
  /// A change whose value is given as JSON text (empty for an erase).
  void add(std::string_view key, bool erased, std::string_view value_json);
  /// A change as the backend made it.
  void add(const Change& change);
  /// Writes the counts, length and checksums.
  void finish();

 private:
  std::string& m_out;
  std::size_t m_start;
  std::uint32_t m_count = 0;
};

/// Appends `record` (its kind, revision, time and changes, or a header's generation) to `out`.
void encode_record(std::string& out, const LogRecord& record);
/// Appends the header record of a file of `generation` (`revision`: see RecordKind::header).
void encode_header(std::string& out, std::uint64_t generation, Revision revision, std::int64_t timestamp_ms);

/// Where and how a StoreLog keeps its data.
struct StoreLogOptions {
  std::string dir;
  FsyncPolicy fsync = FsyncPolicy::always;
  /// Compact once the log is larger than this and than twice the last snapshot.
  std::uint64_t compact_min_bytes = 16 * 1024 * 1024;
  /// Changes kept for watches in the recovered history.
  std::size_t history = 10'000;
};

/// The data directory of a scale-store: locked while open, recovered by open(), then written by
/// one thread that groups concurrent writes into one write() and (under `always`) one fdatasync.
/// append() encodes its record on the caller's thread; a waiter appended from a CompletionThread
/// completes there (one post per thread and batch), any other on the writer thread.
class StoreLog final : public MemoryJournal {
 public:
  /// Locks `options.dir` (creating it), recovers what it holds into `recovered` and starts the
  /// writer. Throws scale::Error naming the file (and byte offset) when it cannot.
  static std::shared_ptr<StoreLog> open(const StoreLogOptions& options, RecoveredMemory& recovered);

  ~StoreLog() override;
  StoreLog(const StoreLog&) = delete;
  StoreLog& operator=(const StoreLog&) = delete;

  bool append(Revision revision, std::int64_t timestamp_ms, std::span<const std::shared_ptr<const Change>> changes,
              std::unique_ptr<JournalWaiter> waiter) override;
  void snapshot(Revision revision, std::vector<Entry> entries) override;

  /// Writes and fsyncs everything appended so far, waits for a compaction in progress, stops the
  /// writer and unlocks the directory. Later appends fail. Idempotent.
  void close();
  /// fdatasync calls made on the log so far.
  std::uint64_t fsyncs() const noexcept { return m_fsyncs.load(std::memory_order_relaxed); }
  /// True while a snapshot is being written.
  bool compacting() const noexcept { return m_compacting.load(); }
  /// Snapshots completed since open.
  std::uint64_t compactions() const noexcept { return m_compactions.load(std::memory_order_relaxed); }
  /// Rotations or snapshots that failed since open (each is logged and retried later).
  std::uint64_t compaction_failures() const noexcept { return m_compaction_failures.load(std::memory_order_relaxed); }
  /// Records a torn log end dropped at open (at least: see DroppedTail), and its bytes.
  std::uint64_t recovery_dropped_records() const noexcept { return m_recovery_dropped_records; }
  std::uint64_t recovery_dropped_bytes() const noexcept { return m_recovery_dropped_bytes; }
  /// Null while writes can be made durable; once a write or fsync of the log failed, that error
  /// (every later write fails with it until a restart).
  std::exception_ptr health() const;

 private:
  /// A write appended (its record encoded into m_bytes by append(), on the caller's thread) or a
  /// snapshot's marker.
  struct Pending {
    Revision revision = 0;
    std::size_t end = 0;  // where the record ends (a marker: where the log switches) in the bytes
    std::unique_ptr<JournalWaiter> waiter;
    CompletionThread* thread = nullptr;  // where the waiter completes (null: on the writer)
    /// Set on the marker after which a snapshot is taken: the log switches to a new file there.
    std::shared_ptr<std::vector<Entry>> snapshot;
  };
  /// Completes a batch's waiters: each completion thread's in one post, the others here.
  static void complete(std::vector<Pending>& batch, const std::exception_ptr& error);

  explicit StoreLog(const StoreLogOptions& options);
  void recover(RecoveredMemory& recovered);
  void run_writer();
  void switch_log(Revision revision, std::shared_ptr<std::vector<Entry>> entries);
  void compaction_failed(const std::string& problem);
  void write_snapshot(std::uint64_t generation, Revision revision, std::shared_ptr<std::vector<Entry>> entries);
  void sync();
  std::string path(std::string_view name) const;

  const StoreLogOptions m_options;
  int m_lock_fd = -1;
  int m_log_fd = -1;
  std::uint64_t m_generation = 1;                  // of the log being written (writer thread after open)
  std::uint64_t m_log_bytes = 0;                   // its size (writer thread after open)
  std::atomic<std::uint64_t> m_snapshot_bytes{0};  // of the last snapshot written or recovered
  bool m_dirty = false;                            // written but not fsync'd (writer thread)
  std::uint64_t m_recovery_dropped_records = 0;    // set by open()
  std::uint64_t m_recovery_dropped_bytes = 0;

  mutable std::mutex m_mutex;  // guards what follows up to m_writer
  std::condition_variable m_wake;
  std::vector<Pending> m_pending;
  std::string m_bytes;  // the pending writes' records, in order
  bool m_closing = false;
  std::exception_ptr m_failed;  // after a failed write or fsync every later write fails with it
  std::thread m_writer;

  std::atomic<bool> m_want_snapshot{false};
  std::atomic<bool> m_compacting{false};
  std::mutex m_compaction_mutex;  // guards m_compactor
  std::thread m_compactor;
  std::atomic<std::uint64_t> m_fsyncs{0};
  std::atomic<std::uint64_t> m_compactions{0};
  std::atomic<std::uint64_t> m_compaction_failures{0};
  // After a failed rotation or snapshot: failures in a row, and no new attempt before this
  // (steady_clock nanoseconds), so a lasting cause (EMFILE, EACCES) is retried with backoff.
  std::atomic<std::uint32_t> m_failures_in_a_row{0};
  std::atomic<std::int64_t> m_retry_after_ns{0};
};

}  // namespace scale::detail
