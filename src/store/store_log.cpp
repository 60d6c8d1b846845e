// scale-store's data directory: the record format (encoder, decoder, CRC-32C), recovery, the
// group-commit writer and compaction into snapshots. docs/durability.md describes the rules.
//
// Files in the directory:
//   LOCK                 flock'd while a server has the directory open
//   log.<G>              a header (G, the first revision), then records of writes, each revision one
//                        more than the one before
//   snapshot.<G>         a header (G, its revision), then every entry as of the revision just
//                        before log.<G>'s first record
// (Files written before headers existed begin with their first write or snapshot_begin record.)
//   snapshot.<G>.tmp     a snapshot being written (ignored and removed at start)
// Recovery loads the newest snapshot.<S> (if any) and replays every log.<G> with G >= S in order.

#include "store/store_log.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <system_error>
#include <utility>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include <nlohmann/json.hpp>

#include <scale/detail/bytes.hpp>
#include <scale/detail/loop.hpp>
#include <scale/error.hpp>

namespace scale::detail {
namespace {

// ---------------------------------------------------------------------------------------------
// CRC-32C: a table for any CPU, the SSE 4.2 instruction where there is one.

constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    table[i] = crc;
  }
  return table;
}
constexpr auto crc_table = make_crc_table();

std::uint32_t crc32c_table(const unsigned char* data, std::size_t size, std::uint32_t crc) noexcept {
  for (std::size_t i = 0; i < size; ++i) crc = crc_table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(const unsigned char* data, std::size_t size,
                                                             std::uint32_t crc) noexcept {
  std::uint64_t crc64 = crc;
  while (size >= 8) {
    std::uint64_t word;
    std::memcpy(&word, data, 8);
    crc64 = _mm_crc32_u64(crc64, word);
    data += 8;
    size -= 8;
  }
  crc = static_cast<std::uint32_t>(crc64);
  while (size-- > 0) crc = _mm_crc32_u8(crc, *data++);
  return crc;
}
const bool has_sse42 = __builtin_cpu_supports("sse4.2");
#endif

// Payload: kind u8, revision i64, timestamp i64, count u32, then per change:
// flags u8 (1: erased), key length u32, key, value length u32, value (JSON text; empty if erased).
// A header has no changes and ends with its generation u64.
constexpr std::size_t payload_fixed = 1 + 8 + 8 + 4;
constexpr std::size_t change_fixed = 1 + 4 + 4;

/// Parses a payload whose checksum matched; the reason it is malformed, if it is.
std::optional<std::string> parse_payload(std::string_view payload, LogRecord& record) {
  if (payload.size() < payload_fixed)
    return "a payload of " + std::to_string(payload.size()) + " bytes is shorter than a record's fixed fields";
  auto kind = static_cast<unsigned char>(payload[0]);
  if (kind < 1 || kind > 4) return "unknown record kind " + std::to_string(kind) + " (written by a newer scale-store?)";
  record.kind = static_cast<RecordKind>(kind);
  record.revision = static_cast<Revision>(load_le<std::uint64_t>(payload.data() + 1));
  record.timestamp_ms = static_cast<std::int64_t>(load_le<std::uint64_t>(payload.data() + 9));
  std::uint32_t count = load_le<std::uint32_t>(payload.data() + 17);
  if (record.revision < 0) return "a negative revision";
  if (record.kind == RecordKind::header) {
    if (count != 0) return "a header with changes";
    if (payload.size() != payload_fixed + 8)
      return "a header of " + std::to_string(payload.size()) + " bytes instead of " + std::to_string(payload_fixed + 8);
    record.generation = load_le<std::uint64_t>(payload.data() + payload_fixed);
    if (record.generation == 0) return "a header of generation 0";
    return std::nullopt;
  }
  if (record.kind == RecordKind::write && (count == 0 || record.revision == 0))
    return "a write record without changes or revision";
  if (record.kind != RecordKind::write && count != 0) return "a snapshot marker with changes";
  std::size_t at = payload_fixed;
  if (count > (payload.size() - at) / change_fixed) return "more changes than the record can hold";
  record.changes.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    if (payload.size() - at < change_fixed) return "a change runs past the end of the record";
    auto flags = static_cast<unsigned char>(payload[at]);
    if (flags > 1) return "a change with unknown flags " + std::to_string(flags);
    std::size_t key_size = load_le<std::uint32_t>(payload.data() + at + 1);
    at += 5;
    if (payload.size() - at < key_size + 4) return "a key runs past the end of the record";
    std::string_view key = payload.substr(at, key_size);
    at += key_size;
    std::size_t value_size = load_le<std::uint32_t>(payload.data() + at);
    at += 4;
    if (payload.size() - at < value_size) return "a value runs past the end of the record";
    std::string_view value = payload.substr(at, value_size);
    at += value_size;
    bool erased = flags == 1;
    if (erased && !value.empty()) return "an erase that carries a value";
    if (!erased && !nlohmann::json::accept(value)) return "a value that is not valid JSON";
    record.changes.push_back(LogChange{std::string(key), std::string(value), erased});
  }
  if (at != payload.size()) return std::to_string(payload.size() - at) + " unexpected bytes after the last change";
  return std::nullopt;
}

bool all_zero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == '\0'; });
}

// ---------------------------------------------------------------------------------------------
// Files.

std::string errno_text(int error) { return std::system_category().message(error); }

[[noreturn]] void fail_io(const std::string& what, const std::string& file, int error = errno) {
  throw Error("scale-store: " + what + " '" + file + "': " + errno_text(error));
}

void write_all(int fd, std::string_view bytes, const std::string& file) {
  while (!bytes.empty()) {
    auto n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_io("cannot write to", file);
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::string read_all(const std::string& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_io("cannot open", file);
  std::string bytes;
  struct stat info {};
  if (::fstat(fd, &info) == 0 && info.st_size > 0) bytes.reserve(static_cast<std::size_t>(info.st_size));
  char chunk[1 << 16];
  for (;;) {
    auto n = ::read(fd, chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      int error = errno;
      ::close(fd);
      fail_io("cannot read", file, error);
    }
    if (n == 0) break;
    bytes.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return bytes;
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail_io("cannot open the data directory", dir);
  if (::fsync(fd) != 0) {
    int error = errno;
    ::close(fd);
    fail_io("cannot fsync the data directory", dir, error);
  }
  ::close(fd);
}

/// The generation in a name "<prefix><digits><suffix>", or nullopt when it is not one.
std::optional<std::uint64_t> generation_of(std::string_view name, std::string_view prefix, std::string_view suffix) {
  if (!name.starts_with(prefix) || !name.ends_with(suffix)) return std::nullopt;
  auto digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return value;
}

std::string numbered(std::string_view prefix, std::uint64_t generation) {
  std::string digits = std::to_string(generation);
  return std::string(prefix) + std::string(digits.size() < 10 ? 10 - digits.size() : 0, '0') + digits;
}

/// The files of a data directory.
struct Listing {
  std::map<std::uint64_t, std::string> logs, snapshots, temporaries;  // generation -> name
};

Listing list_dir(const std::string& dir) {
  Listing listing;
  DIR* handle = ::opendir(dir.c_str());
  if (!handle) fail_io("cannot list the data directory", dir);
  while (auto* entry = ::readdir(handle)) {
    std::string_view name = entry->d_name;
    if (auto g = generation_of(name, "log.", ""))
      listing.logs[*g] = std::string(name);
    else if (auto s = generation_of(name, "snapshot.", ""))
      listing.snapshots[*s] = std::string(name);
    else if (auto t = generation_of(name, "snapshot.", ".tmp"))
      listing.temporaries[*t] = std::string(name);
  }
  ::closedir(handle);
  return listing;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc) noexcept {
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
#if defined(__x86_64__)
  if (has_sse42) return ~crc32c_sse42(data, bytes.size(), ~crc);
#endif
  return ~crc32c_table(data, bytes.size(), ~crc);
}

// ---------------------------------------------------------------------------------------------
// Encoder and decoder.

RecordEncoder::RecordEncoder(std::string& out, RecordKind kind, Revision revision, std::int64_t timestamp_ms)
    : m_out(out), m_start(out.size()) {
  out.append(record_header_size, '\0');
  ByteWriter writer(out);
  writer.u8(static_cast<std::uint8_t>(kind));
  writer.u64(static_cast<std::uint64_t>(revision));
  writer.u64(static_cast<std::uint64_t>(timestamp_ms));
  writer.u32(0);  // the count, set by finish()
}

void RecordEncoder::add(std::string_view key, bool erased, std::string_view value_json) {
  ByteWriter writer(m_out);
  writer.u8(erased ? 1 : 0);
  writer.sized(key);
  writer.sized(value_json);
  ++m_count;
}

void RecordEncoder::add(const Change& change) {
  if (change.erased) return add(change.key, true, {});
  ByteWriter writer(m_out);
  writer.u8(0);
  writer.sized(change.key);
  const std::size_t length_at = writer.reserve_u32();
  // The JSON text is written straight into the record (what json::dump does into a new string).
  // Invalid UTF-8 in a string is replaced, so encoding never fails.
  nlohmann::detail::serializer<nlohmann::json> serializer(nlohmann::detail::output_adapter<char, std::string>(m_out),
                                                          ' ', nlohmann::json::error_handler_t::replace);
  serializer.dump(change.value, false, false, 0);
  writer.end_sized(length_at);
  ++m_count;
}

void RecordEncoder::finish() {
  std::size_t payload_size = m_out.size() - m_start - record_header_size;
  if (payload_size > max_record_payload) {
    m_out.resize(m_start);
    throw Error("scale-store: a write of " + std::to_string(payload_size) +
                " bytes is larger than a log record may be (1 GiB)");
  }
  ByteWriter writer(m_out);
  writer.fill_u32(m_start + record_header_size + 17, m_count);
  writer.fill_u32(m_start, static_cast<std::uint32_t>(payload_size));
  writer.fill_u32(m_start + 4, crc32c(std::string_view(m_out).substr(m_start, 4)));
  writer.fill_u32(m_start + 8, crc32c(std::string_view(m_out).substr(m_start + record_header_size, payload_size)));
}

void encode_record(std::string& out, const LogRecord& record) {
  if (record.kind == RecordKind::header)
    return encode_header(out, record.generation, record.revision, record.timestamp_ms);
  RecordEncoder encoder(out, record.kind, record.revision, record.timestamp_ms);
  for (const auto& change : record.changes) encoder.add(change.key, change.erased, change.value);
  encoder.finish();
}

void encode_header(std::string& out, std::uint64_t generation, Revision revision, std::int64_t timestamp_ms) {
  RecordEncoder encoder(out, RecordKind::header, revision, timestamp_ms);
  ByteWriter(out).u64(generation);
  encoder.finish();
}

DecodedLog decode_log(std::string_view bytes) {
  DecodedLog decoded;
  std::size_t at = 0;
  auto stop = [&](LogTail tail, std::string problem) {
    decoded.tail = tail;
    decoded.problem = std::move(problem);
  };
  while (at < bytes.size()) {
    std::size_t left = bytes.size() - at;
    if (left < record_header_size) {
      stop(LogTail::torn, "an incomplete record header (" + std::to_string(left) + " bytes)");
      break;
    }
    std::uint32_t length = load_le<std::uint32_t>(bytes.data() + at);
    if (crc32c(bytes.substr(at, 4)) != load_le<std::uint32_t>(bytes.data() + at + 4)) {
      if (all_zero(bytes.substr(at)))
        stop(LogTail::torn, std::to_string(left) + " zero bytes where a record should start");
      else
        stop(LogTail::corrupt, "a record header whose checksum does not match");
      break;
    }
    if (length > max_record_payload) {
      stop(LogTail::corrupt, "a record length of " + std::to_string(length) + " bytes, above the 1 GiB limit");
      break;
    }
    if (left - record_header_size < length) {
      stop(LogTail::torn, "an incomplete record (" + std::to_string(left - record_header_size) + " of " +
                              std::to_string(length) + " payload bytes)");
      break;
    }
    std::string_view payload = bytes.substr(at + record_header_size, length);
    std::size_t end = at + record_header_size + length;
    if (crc32c(payload) != load_le<std::uint32_t>(bytes.data() + at + 8)) {
      if (end == bytes.size() || all_zero(bytes.substr(end)))
        stop(LogTail::torn, "a last record whose checksum does not match");
      else
        stop(LogTail::corrupt, "a record whose checksum does not match");
      break;
    }
    LogRecord record;
    if (auto problem = parse_payload(payload, record)) {
      stop(LogTail::corrupt, "a malformed record: " + *problem);
      break;
    }
    record.offset = at;
    record.size = end - at;
    decoded.records.push_back(std::move(record));
    at = end;
  }
  decoded.valid_end = at;
  return decoded;
}

DroppedTail inspect_dropped(std::string_view bytes, std::size_t from) {
  DroppedTail dropped;
  if (from >= bytes.size()) return dropped;
  dropped.bytes = bytes.size() - from;
  for (std::size_t at = from; at < bytes.size();) {
    std::string_view rest = bytes.substr(at);
    bool header = rest.size() >= record_header_size &&
                  crc32c(rest.substr(0, 4)) == load_le<std::uint32_t>(rest.data() + 4) &&
                  load_le<std::uint32_t>(rest.data()) <= max_record_payload;
    if (!header && (all_zero(rest) || rest.size() >= record_header_size)) {
      // Zeros, or a header whose checksum does not match: records may be in there, or none.
      dropped.counted = false;
      dropped.uncounted_bytes = rest.size();
      break;
    }
    // A record header (or the first bytes of one, written before the crash).
    ++dropped.records;
    if (!header) break;
    at += std::min<std::size_t>(rest.size(), record_header_size + load_le<std::uint32_t>(rest.data()));
  }
  return dropped;
}

// ---------------------------------------------------------------------------------------------
// StoreLog: open and recovery.

StoreLog::StoreLog(const StoreLogOptions& options) : m_options(options) {}

std::string StoreLog::path(std::string_view name) const { return m_options.dir + "/" + std::string(name); }

std::shared_ptr<StoreLog> StoreLog::open(const StoreLogOptions& options, RecoveredMemory& recovered) {
  if (options.dir.empty()) throw Error("scale-store: the data directory is empty; pass --data-dir DIR");
  std::shared_ptr<StoreLog> log(new StoreLog(options));
  std::error_code created;
  std::filesystem::create_directories(options.dir, created);  // and its missing parents
  if (created) fail_io("cannot create the data directory", options.dir, created.value());
  log->m_lock_fd = ::open(log->path("LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (log->m_lock_fd < 0) fail_io("cannot open the lock file", log->path("LOCK"));
  if (::flock(log->m_lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      throw Error("scale-store: the data directory '" + options.dir +
                  "' is in use by another scale-store (it holds the lock on '" + log->path("LOCK") +
                  "'); stop that server first or pass another --data-dir");
    fail_io("cannot lock", log->path("LOCK"));
  }
  log->recover(recovered);
  log->m_writer = std::thread([raw = log.get()] { raw->run_writer(); });
  return log;
}

void StoreLog::recover(RecoveredMemory& recovered) {
  const auto& dir = m_options.dir;
  auto listing = list_dir(dir);
  for (const auto& [generation, name] : listing.temporaries) {
    ::unlink(path(name).c_str());
    log_error("scale-store: removed '" + path(name) + "', a snapshot whose writing was interrupted");
  }

  std::map<std::string, Entry, std::less<>> entries;
  Revision revision = 0;
  Revision compacted_through = 0;
  std::deque<Change> history;

  std::uint64_t snapshot_generation = listing.snapshots.empty() ? 0 : listing.snapshots.rbegin()->first;
  std::uint64_t written_as = snapshot_generation;  // from its header; an older snapshot has none
  std::optional<Revision> header_revision;
  if (snapshot_generation != 0) {
    auto file = path(listing.snapshots.rbegin()->second);
    auto bytes = read_all(file);
    auto decoded = decode_log(bytes);
    auto damaged = [&](std::size_t offset, const std::string& problem) {
      return Error("scale-store: the snapshot '" + file + "' is damaged at byte offset " + std::to_string(offset) +
                   ": " + problem +
                   ". A snapshot is complete when it gets its name, so the disk or another program changed it; "
                   "restore the data directory from a backup (or move it away to start empty)");
    };
    if (decoded.tail != LogTail::clean) throw damaged(decoded.valid_end, decoded.problem);
    std::span<const LogRecord> records = decoded.records;
    if (!records.empty() && records.front().kind == RecordKind::header) {
      written_as = records.front().generation;
      header_revision = records.front().revision;
      records = records.subspan(1);
    }
    if (records.size() < 2 || records.front().kind != RecordKind::snapshot_begin ||
        records.back().kind != RecordKind::snapshot_end || records.front().revision != records.back().revision)
      throw damaged(records.empty() ? 0 : records.back().offset, "it does not begin and end with its markers");
    for (std::size_t i = 1; i + 1 < records.size(); ++i) {
      const auto& record = records[i];
      if (record.kind != RecordKind::write || record.revision > records.front().revision)
        throw damaged(record.offset, "an entry record out of place");
      for (const auto& change : record.changes) {
        if (change.erased) throw damaged(record.offset, "an erased entry");
        entries.insert_or_assign(
            change.key, Entry{change.key, nlohmann::json::parse(change.value), record.revision, record.timestamp_ms});
      }
    }
    if (header_revision && *header_revision != records.front().revision)
      throw damaged(0, "its header's revision " + std::to_string(*header_revision) + " is not its own, " +
                           std::to_string(records.front().revision));
    revision = compacted_through = records.front().revision;
    m_snapshot_bytes = bytes.size();

    // NOTE: the snapshot replaces the older files only if it holds every revision they hold: a
    // stray copy (snapshot.23 copied to snapshot.99) must not delete the logs written after it.
    std::string copy = written_as == snapshot_generation
                           ? std::string()
                           : " (it was written as '" + numbered("snapshot.", written_as) + "': a copy or a rename)";
    for (const auto& [generation, name] : listing.logs) {
      if (generation >= snapshot_generation) break;
      Revision last = 0;
      for (const auto& record : decode_log(read_all(path(name))).records)
        if (record.kind == RecordKind::write) last = std::max(last, record.revision);
      if (last > revision)
        throw Error("scale-store: refusing to start: the snapshot '" + file + "' holds the store as of revision " +
                    std::to_string(revision) + copy + ", but the older log '" + path(name) +
                    "', which recovery would delete, holds writes up to revision " + std::to_string(last) +
                    " that the snapshot does not have. The snapshot is out of place (copied or renamed into the "
                    "data directory?) and starting from it would lose those writes. Move '" +
                    file + "' out of the data directory and start again, or restore the directory from a backup");
    }
    if (!copy.empty())
      throw Error("scale-store: refusing to start: the snapshot '" + file + "'" + copy +
                  " is out of place. Move it out of the data directory and start again, or restore the directory "
                  "from a backup");
  }
  // Leftovers of a compaction whose clean-up was interrupted: the snapshot holds what they held.
  for (const auto& [generation, name] : listing.snapshots)
    if (generation < snapshot_generation) ::unlink(path(name).c_str());
  for (const auto& [generation, name] : listing.logs)
    if (generation < snapshot_generation) ::unlink(path(name).c_str());

  std::vector<std::pair<std::uint64_t, std::string>> logs;
  for (const auto& [generation, name] : listing.logs)
    if (generation >= snapshot_generation) logs.emplace_back(generation, name);
  for (std::size_t i = 0; i < logs.size(); ++i) {
    bool last = i + 1 == logs.size();
    auto file = path(logs[i].second);
    auto bytes = read_all(file);
    auto decoded = decode_log(bytes);
    for (const auto& record : decoded.records) {
      if (record.kind == RecordKind::header && record.offset == 0) {
        if (record.generation != logs[i].first)
          throw Error("scale-store: refusing to start: the log '" + file + "' was written as '" +
                      numbered("log.", record.generation) +
                      "' (a copy or a rename), so it is out of place. Move it out of the data directory and "
                      "start again, or restore the directory from a backup");
        if (record.revision != revision + 1)
          throw Error("scale-store: the log '" + file + "' begins at revision " + std::to_string(record.revision) +
                      " where revision " + std::to_string(revision + 1) +
                      " was expected: a log or snapshot file of this directory is missing or out of place; "
                      "restore the data directory from a backup");
        continue;
      }
      if (record.kind != RecordKind::write)
        throw Error("scale-store: the log '" + file + "' holds a snapshot marker at byte offset " +
                    std::to_string(record.offset) + "; restore the data directory from a backup");
      if (record.revision != revision + 1)
        throw Error("scale-store: the log '" + file + "' holds revision " + std::to_string(record.revision) +
                    " at byte offset " + std::to_string(record.offset) + " where revision " +
                    std::to_string(revision + 1) +
                    " was expected: a log or snapshot file of this directory is missing or out of place; "
                    "restore the data directory from a backup");
      for (const auto& change : record.changes) {
        Change replayed{change.key, nullptr, record.revision, record.timestamp_ms, change.erased};
        if (change.erased) {
          entries.erase(change.key);
        } else {
          replayed.value = nlohmann::json::parse(change.value);
          entries.insert_or_assign(change.key, Entry{change.key, replayed.value, record.revision, record.timestamp_ms});
        }
        history.push_back(std::move(replayed));
        while (history.size() > m_options.history) {
          compacted_through = history.front().revision;
          history.pop_front();
        }
      }
      revision = record.revision;
    }
    if (decoded.tail == LogTail::corrupt || (decoded.tail == LogTail::torn && !last)) {
      throw Error("scale-store: the log '" + file + "' is corrupt at byte offset " + std::to_string(decoded.valid_end) +
                  ": " + decoded.problem + ", and " + std::to_string(bytes.size() - decoded.valid_end) +
                  " bytes follow, so it is not the end of an interrupted write. Refusing to start, which would "
                  "lose the writes after it. Restore the data directory from a backup, or keep only the writes "
                  "before the damage with 'truncate -s " +
                  std::to_string(decoded.valid_end) + " " + file +
                  (last ? "" : "' and by moving the later log files away") + "'");
    }
    if (decoded.tail == LogTail::torn) {
      // NOTE: a torn write and a tail the disk zeroed look the same (etcd and Redis accept both);
      // what is dropped is said exactly, as far as the bytes show it.
      auto dropped = inspect_dropped(bytes, decoded.valid_end);
      m_recovery_dropped_records += dropped.records;
      m_recovery_dropped_bytes += dropped.bytes;
      auto plural = [](std::size_t n, const char* what) {
        return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
      };
      std::string records = plural(dropped.records, "record");
      std::string revisions;
      if (dropped.counted) {
        revisions = dropped.records == 1 ? "revision " + std::to_string(revision + 1)
                                         : "revisions " + std::to_string(revision + 1) + " to " +
                                               std::to_string(revision + static_cast<Revision>(dropped.records));
      } else {
        records = "at least " + records + " (then " + plural(dropped.uncounted_bytes, "byte") +
                  " without a record header, zeros or damage: how many records they held is unknown)";
        revisions = "revisions " + std::to_string(revision + 1) + " to unknown";
      }
      log_error("scale-store: warning: recovery dropped the end of the log '" + file + "': bytes " +
                std::to_string(decoded.valid_end) + " to " + std::to_string(bytes.size() - 1) + " (" +
                plural(dropped.bytes, "byte") + ", starting with " + decoded.problem + "), holding " + records + ", " +
                revisions +
                ". An interrupted write ends a log this way, and a tail zeroed by the disk cannot be told apart "
                "from one (docs/durability.md). The store starts at revision " +
                std::to_string(revision) + " and the file is truncated to " + std::to_string(decoded.valid_end) +
                " bytes");
      int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) fail_io("cannot open", file);
      if (::ftruncate(fd, static_cast<off_t>(decoded.valid_end)) != 0 || ::fsync(fd) != 0) {
        int error = errno;
        ::close(fd);
        fail_io("cannot truncate the torn end of", file, error);
      }
      ::close(fd);
    }
    if (last) m_log_bytes = decoded.valid_end;
  }

  m_generation = std::max<std::uint64_t>({snapshot_generation, logs.empty() ? 0 : logs.back().first, 1});
  bool created = logs.empty() || logs.back().first != m_generation;
  auto file = path(numbered("log.", m_generation));
  m_log_fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (m_log_fd < 0) fail_io("cannot open the log", file);
  if (created) m_log_bytes = 0;
  if (m_log_bytes == 0) {
    // A new (or empty) log begins with its header: its generation and first revision.
    std::string header;
    encode_header(header, m_generation, revision + 1, now_ms());
    write_all(m_log_fd, header, file);
    if (::fdatasync(m_log_fd) != 0) fail_io("cannot fsync the log", file);
    m_log_bytes = header.size();
  }
  if (created) fsync_dir(dir);

  recovered.entries.clear();
  recovered.entries.reserve(entries.size());
  for (auto& [key, entry] : entries) recovered.entries.push_back(std::move(entry));
  recovered.revision = revision;
  recovered.history.assign(std::make_move_iterator(history.begin()), std::make_move_iterator(history.end()));
  recovered.compacted_through = compacted_through;
}

// ---------------------------------------------------------------------------------------------
// StoreLog: writing.

bool StoreLog::append(Revision revision, std::int64_t timestamp_ms,
                      std::span<const std::shared_ptr<const Change>> changes, std::unique_ptr<JournalWaiter> waiter) {
  CompletionThread* thread = CompletionThread::current();
  {
    std::lock_guard lock(m_mutex);
    RecordEncoder encoder(m_bytes, RecordKind::write, revision, timestamp_ms);
    for (const auto& change : changes) encoder.add(*change);
    encoder.finish();
    m_pending.push_back(Pending{revision, m_bytes.size(), std::move(waiter), thread, {}});
  }
  m_wake.notify_one();
  if (m_want_snapshot.load(std::memory_order_relaxed) && m_want_snapshot.exchange(false)) {
    m_compacting = true;
    return true;
  }
  return false;
}

void StoreLog::snapshot(Revision revision, std::vector<Entry> entries) {
  // A marker after the write it follows (the backend's lock keeps the next write out until now).
  std::lock_guard lock(m_mutex);
  m_pending.push_back(
      Pending{revision, m_bytes.size(), {}, nullptr, std::make_shared<std::vector<Entry>>(std::move(entries))});
}

namespace {

/// One completion thread's waiters of a batch. Completed when run, or else when dropped (a
/// thread that stopped before running it): a durable write's waiter is never left waiting.
struct ThreadCompletions {
  std::vector<std::unique_ptr<JournalWaiter>> waiters;
  std::exception_ptr error;
  void run() noexcept {
    for (auto& waiter : waiters) waiter->done(error);
    waiters.clear();
  }
  ~ThreadCompletions() { run(); }
};

}  // namespace

void StoreLog::complete(std::vector<Pending>& batch, const std::exception_ptr& error) {
  std::vector<std::pair<CompletionThread*, std::shared_ptr<ThreadCompletions>>> by_thread;
  for (auto& pending : batch) {
    if (!pending.waiter) continue;
    if (!pending.thread) {
      pending.waiter->done(error);
      continue;
    }
    auto found = std::find_if(by_thread.begin(), by_thread.end(),
                              [&](const auto& group) { return group.first == pending.thread; });
    if (found == by_thread.end()) {
      by_thread.emplace_back(pending.thread, std::make_shared<ThreadCompletions>());
      found = std::prev(by_thread.end());
      found->second->error = error;
    }
    found->second->waiters.push_back(std::move(pending.waiter));
  }
  for (auto& [thread, completions] : by_thread)
    thread->post([completions = std::move(completions)] { completions->run(); });
}

void StoreLog::sync() {
  if (::fdatasync(m_log_fd) != 0) fail_io("cannot fsync the log", path(numbered("log.", m_generation)));
  m_fsyncs.fetch_add(1, std::memory_order_relaxed);
  m_dirty = false;
}

void StoreLog::run_writer() {
  using clock = std::chrono::steady_clock;
  const bool every_second = m_options.fsync == FsyncPolicy::everysec;
  std::vector<Pending> batch;
  std::string bytes;
  auto last_sync = clock::now();
  for (;;) {
    bool closing;
    std::exception_ptr failed;
    {
      std::unique_lock lock(m_mutex);
      auto has_work = [&] { return !m_pending.empty() || m_closing; };
      if (every_second && m_dirty)
        m_wake.wait_until(lock, last_sync + std::chrono::seconds(1), has_work);
      else
        m_wake.wait(lock, has_work);
      batch.swap(m_pending);
      bytes.swap(m_bytes);
      closing = m_closing;
      failed = m_failed;
    }
    // NOTE: everything pending goes out in one write() and, under `always`, one fdatasync: that
    // is the group commit. The waiters complete only after it, outside the lock.
    std::exception_ptr error = failed;
    if (!error && !batch.empty()) {
      try {
        auto file = path(numbered("log.", m_generation));
        std::size_t written = 0;  // of `bytes`
        auto write_through = [&](std::size_t end) {
          if (end == written) return;
          write_all(m_log_fd, std::string_view(bytes).substr(written, end - written), file);
          m_log_bytes += end - written;
          written = end;
          m_dirty = true;
        };
        for (auto& pending : batch) {
          if (!pending.snapshot) continue;
          write_through(pending.end);
          switch_log(pending.revision, std::move(pending.snapshot));
          file = path(numbered("log.", m_generation));
        }
        write_through(bytes.size());
        if (m_options.fsync == FsyncPolicy::always && m_dirty) sync();
      } catch (const std::exception& problem) {
        error = std::make_exception_ptr(JournalError(std::string(problem.what()) +
                                                     "; the write is not durable, and every later write fails until "
                                                     "scale-store is restarted"));
        log_error(problem.what());
        std::lock_guard lock(m_mutex);
        m_failed = error;
      }
    }
    complete(batch, error);
    batch.clear();
    bytes.clear();
    if (bytes.capacity() > 4 * 1024 * 1024) std::string().swap(bytes);  // after a burst, give the memory back

    if (!error && every_second && m_dirty && clock::now() - last_sync >= std::chrono::seconds(1)) {
      try {
        sync();
      } catch (const std::exception& problem) {
        log_error(std::string(problem.what()) + "; every later write fails until scale-store is restarted");
        std::lock_guard lock(m_mutex);
        m_failed = std::make_exception_ptr(
            JournalError(std::string(problem.what()) + "; every write fails until scale-store is restarted"));
      }
      last_sync = clock::now();
    }
    if (!error && !m_compacting.load() &&
        m_log_bytes > std::max<std::uint64_t>(m_options.compact_min_bytes, 2 * m_snapshot_bytes.load()) &&
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count() >=
            m_retry_after_ns.load())
      m_want_snapshot = true;

    if (closing) {
      std::lock_guard lock(m_mutex);
      if (m_pending.empty()) break;
    }
  }
  if (m_dirty) {
    try {
      sync();
    } catch (const std::exception& problem) {
      log_error(problem.what());
    }
  }
}

void StoreLog::switch_log(Revision revision, std::shared_ptr<std::vector<Entry>> entries) {
  // Everything up to `revision` is in the old log; make it durable before the new one gets more.
  // A failure here is the log's own: it propagates and fails the writes.
  if (m_dirty) sync();
  // NOTE: a new log that cannot be made (EMFILE, EACCES, a file in the way) is not the log's
  // failure: the writes go on to the current log and the compaction is retried later. O_EXCL, so
  // the file unlinked on a failure is always the one just made.
  auto file = path(numbered("log.", m_generation + 1));
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return compaction_failed("cannot create the log '" + file + "': " + errno_text(errno));
  std::string header;
  encode_header(header, m_generation + 1, revision + 1, now_ms());
  try {
    write_all(fd, header, file);
    if (::fdatasync(fd) != 0) fail_io("cannot fsync the log", file);
    fsync_dir(m_options.dir);
  } catch (const std::exception& problem) {
    ::close(fd);
    ::unlink(file.c_str());
    return compaction_failed(problem.what());
  }
  ::close(m_log_fd);
  m_log_fd = fd;
  m_generation += 1;
  m_log_bytes = header.size();
  std::lock_guard lock(m_compaction_mutex);
  if (m_compactor.joinable()) m_compactor.join();
  m_compactor = std::thread([this, generation = m_generation, revision, entries = std::move(entries)]() mutable {
    write_snapshot(generation, revision, std::move(entries));
  });
}

void StoreLog::compaction_failed(const std::string& problem) {
  using namespace std::chrono;
  auto failures = m_failures_in_a_row.fetch_add(1) + 1;
  // 0.5 s, 1 s, 2 s, ... up to a minute between attempts while the cause lasts.
  auto delay = milliseconds(500) * (1ll << std::min<std::uint32_t>(failures - 1, 7));
  delay = std::min<milliseconds>(delay, minutes(1));
  m_retry_after_ns = duration_cast<nanoseconds>((steady_clock::now() + delay).time_since_epoch()).count();
  m_compaction_failures.fetch_add(1, std::memory_order_relaxed);
  log_error("scale-store: compaction failed (" + std::to_string(failures) + " in a row): " + problem +
            ". Writes go on to the current log, which still holds everything; retrying in " +
            std::to_string(duration_cast<milliseconds>(delay).count()) + " ms");
  m_compacting = false;
}

void StoreLog::write_snapshot(std::uint64_t generation, Revision revision,
                              std::shared_ptr<std::vector<Entry>> entries) {
  auto name = numbered("snapshot.", generation);
  auto temporary = path(name + ".tmp");
  int fd = -1;
  try {
    fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail_io("cannot create the snapshot", temporary);
    std::string buffer;
    std::uint64_t size = 0;
    encode_header(buffer, generation, revision, now_ms());
    RecordEncoder(buffer, RecordKind::snapshot_begin, revision, now_ms()).finish();
    for (const auto& entry : *entries) {
      RecordEncoder encoder(buffer, RecordKind::write, entry.revision, entry.timestamp_ms);
      encoder.add(Change{entry.key, entry.value, entry.revision, entry.timestamp_ms, false});
      encoder.finish();
      if (buffer.size() >= (1u << 20)) {
        write_all(fd, buffer, temporary);
        size += buffer.size();
        buffer.clear();
      }
    }
    entries.reset();
    RecordEncoder(buffer, RecordKind::snapshot_end, revision, now_ms()).finish();
    write_all(fd, buffer, temporary);
    size += buffer.size();
    if (::fsync(fd) != 0) fail_io("cannot fsync the snapshot", temporary);
    ::close(fd);
    fd = -1;
    if (::rename(temporary.c_str(), path(name).c_str()) != 0) fail_io("cannot rename the snapshot", temporary);
    fsync_dir(m_options.dir);
    // What the snapshot replaces. A crash before this is fine: recovery skips and removes them.
    auto listing = list_dir(m_options.dir);
    for (const auto& [g, file] : listing.logs)
      if (g < generation) ::unlink(path(file).c_str());
    for (const auto& [g, file] : listing.snapshots)
      if (g < generation) ::unlink(path(file).c_str());
    m_snapshot_bytes = size;
    m_compactions.fetch_add(1, std::memory_order_relaxed);
    if (auto failures = m_failures_in_a_row.exchange(0); failures > 0)
      log_error("scale-store: compaction into '" + path(name) + "' succeeded after " + std::to_string(failures) +
                " failed attempts");
  } catch (const std::exception& problem) {
    if (fd >= 0) ::close(fd);
    ::unlink(temporary.c_str());
    return compaction_failed(problem.what());
  }
  m_compacting = false;
}

std::exception_ptr StoreLog::health() const {
  std::lock_guard lock(m_mutex);
  return m_failed;
}

void StoreLog::close() {
  {
    std::lock_guard lock(m_mutex);
    if (m_closing) return;
    m_closing = true;
  }
  m_wake.notify_one();
  if (m_writer.joinable()) m_writer.join();
  {
    std::lock_guard lock(m_compaction_mutex);
    if (m_compactor.joinable()) m_compactor.join();
  }
  if (m_log_fd >= 0) ::close(m_log_fd);
  m_log_fd = -1;
  if (m_lock_fd >= 0) ::close(m_lock_fd);  // releases the flock
  m_lock_fd = -1;
}

StoreLog::~StoreLog() {
  close();
  // Writes made after close() were never written.
  auto error = std::make_exception_ptr(
      JournalError("scale-store: the store's log is closed; the write was not made durable"));
  for (auto& pending : m_pending)
    if (pending.waiter) pending.waiter->done(error);
}

}  // namespace scale::detail
