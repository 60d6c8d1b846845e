// scale-store's durability: the log record format, recovery (torn tails, corruption, snapshots,
// history), compaction, group commit, the locked data directory, and the scale-store program
// killed with kill -9 while concurrent clients write.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <scale/detail/memory_backend.hpp>
#include "store/store_log.hpp"
#include <scale/detail/subscription_state.hpp>
#include <scale/error.hpp>

#include "support/loopback.hpp"
#include "support/spawn.hpp"

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using scale::detail::decode_log;
using scale::detail::LogChange;
using scale::detail::LogRecord;
using scale::detail::LogTail;
using scale::detail::RecordKind;

namespace {

/// A fresh directory under the system's temporary directory, removed at the end of the test.
struct TempDir {
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "scale-store-log-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  fs::path path;
  std::string data() const { return (path / "data").string(); }
};

std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const fs::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<fs::path> files_named(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().starts_with(prefix)) found.push_back(entry.path());
  std::sort(found.begin(), found.end());
  return found;
}

LogRecord write_record(scale::Revision revision, std::vector<LogChange> changes, std::int64_t timestamp = 1000) {
  LogRecord record;
  record.revision = revision;
  record.timestamp_ms = timestamp;
  record.changes = std::move(changes);
  return record;
}

/// Three records as a log: a set_many of two keys, an erase, a set with a nested value.
std::string three_records() {
  std::string bytes;
  scale::detail::encode_record(bytes, write_record(1, {{"a", "1", false}, {"b/c", "\"x\"", false}}));
  scale::detail::encode_record(bytes, write_record(2, {{"a", "", true}}));
  scale::detail::encode_record(bytes, write_record(3, {{"n", R"({"k":[1,2,{"z":null}],"s":"é"})", false}}));
  return bytes;
}

/// A StoreLog and the in-process backend journaled to it, as scale-store builds them.
struct Durable {
  explicit Durable(scale::detail::StoreLogOptions options) {
    scale::detail::RecoveredMemory recovered;
    log = scale::detail::StoreLog::open(options, recovered);
    revision = recovered.revision;
    memory = scale::detail::make_in_process_memory({.history = options.history, .journal = log}, std::move(recovered));
  }
  ~Durable() {
    if (log) log->close();
  }
  std::shared_ptr<scale::detail::StoreLog> log;
  std::shared_ptr<scale::detail::MemoryBackend> memory;
  scale::Revision revision = 0;
};

scale::detail::StoreLogOptions options_for(const std::string& dir,
                                           scale::FsyncPolicy fsync = scale::FsyncPolicy::always) {
  return {.dir = dir, .fsync = fsync, .compact_min_bytes = 16 * 1024 * 1024, .history = 10'000};
}

std::map<std::string, scale::Entry> all_entries(scale::detail::MemoryBackend& memory) {
  std::map<std::string, scale::Entry> out;
  for (auto& entry : memory.list("").get()) out[entry.key] = entry;
  return out;
}

/// Starts a watch on `memory`; the changes it delivers are appended to `seen`.
std::shared_ptr<scale::detail::SubscriptionQueue<scale::Change>> watch(scale::detail::MemoryBackend& memory,
                                                                       scale::Revision from,
                                                                       std::vector<scale::Revision>& seen,
                                                                       std::mutex& mutex) {
  auto queue = std::make_shared<scale::detail::SubscriptionQueue<scale::Change>>([&](const scale::Change& change) {
    std::lock_guard lock(mutex);
    seen.push_back(change.revision);
  });
  memory.watch("", from, queue);
  return queue;
}

}  // namespace

TEST_CASE("CRC-32C gives the standard check value", "[store_log]") {
  CHECK(scale::detail::crc32c("123456789") == 0xE3069283u);
  CHECK(scale::detail::crc32c("") == 0u);
  // Continuing from a previous value equals one pass over the whole.
  CHECK(scale::detail::crc32c("56789", scale::detail::crc32c("1234")) == 0xE3069283u);
  std::string long_input(1000, 'q');
  CHECK(scale::detail::crc32c(long_input.substr(500), scale::detail::crc32c(long_input.substr(0, 500))) ==
        scale::detail::crc32c(long_input));
}

TEST_CASE("records decode to what was encoded and encode again to the same bytes", "[store_log]") {
  auto bytes = three_records();
  auto decoded = decode_log(bytes);
  CHECK(decoded.tail == LogTail::clean);
  CHECK(decoded.problem.empty());
  CHECK(decoded.valid_end == bytes.size());
  REQUIRE(decoded.records.size() == 3);
  const auto& first = decoded.records[0];
  CHECK(first.kind == RecordKind::write);
  CHECK(first.revision == 1);
  CHECK(first.timestamp_ms == 1000);
  REQUIRE(first.changes.size() == 2);
  CHECK(first.changes[1].key == "b/c");
  CHECK(first.changes[1].value == "\"x\"");
  CHECK(decoded.records[1].changes[0].erased);
  CHECK(json::parse(decoded.records[2].changes[0].value)["s"] == "é");
  std::string again;
  for (const auto& record : decoded.records) scale::detail::encode_record(again, record);
  CHECK(again == bytes);
  CHECK(decoded.records[2].offset + decoded.records[2].size == bytes.size());
}

TEST_CASE("a torn last record is dropped at every truncation point and the records before it are kept", "[store_log]") {
  auto bytes = three_records();
  auto last = decode_log(bytes).records[2];
  for (std::size_t cut = last.offset + 1; cut < bytes.size(); ++cut) {
    auto decoded = decode_log(std::string_view(bytes).substr(0, cut));
    INFO("cut at " << cut);
    CHECK(decoded.tail == LogTail::torn);
    CHECK(decoded.records.size() == 2);
    CHECK(decoded.valid_end == last.offset);
  }
  SECTION("a last record whose bytes were damaged is torn too") {
    auto damaged = bytes;
    damaged[last.offset + last.size - 3] ^= 0x20;
    auto decoded = decode_log(damaged);
    CHECK(decoded.tail == LogTail::torn);
    CHECK(decoded.valid_end == last.offset);
  }
  SECTION("zeros after the last record (a preallocated or half-written block) are a torn tail") {
    auto decoded = decode_log(bytes + std::string(100, '\0'));
    CHECK(decoded.tail == LogTail::torn);
    CHECK(decoded.records.size() == 3);
    CHECK(decoded.valid_end == bytes.size());
  }
}

TEST_CASE("the bytes a torn tail drops are counted as records where their headers show, unknown where not",
          "[store_log]") {
  auto bytes = three_records();
  auto last = decode_log(bytes).records[2];
  SECTION("a record cut short is one record") {
    auto cut = bytes.substr(0, last.offset + last.size - 4);
    auto dropped = scale::detail::inspect_dropped(cut, decode_log(cut).valid_end);
    CHECK(dropped.bytes == last.size - 4);
    CHECK(dropped.records == 1);
    CHECK(dropped.counted);
  }
  SECTION("a few bytes of a header are one record") {
    auto cut = bytes.substr(0, last.offset + 5);
    auto dropped = scale::detail::inspect_dropped(cut, decode_log(cut).valid_end);
    CHECK(dropped.records == 1);
    CHECK(dropped.counted);
  }
  SECTION("a record zeroed from its middle on: one record seen, then zeros that cannot be counted") {
    auto zeroed = bytes + std::string(300, '\0');
    std::fill(zeroed.begin() + static_cast<std::ptrdiff_t>(last.offset + 20), zeroed.end(), '\0');
    auto decoded = decode_log(zeroed);
    REQUIRE(decoded.tail == LogTail::torn);
    auto dropped = scale::detail::inspect_dropped(zeroed, decoded.valid_end);
    CHECK(dropped.bytes == zeroed.size() - last.offset);
    CHECK(dropped.records == 1);
    CHECK_FALSE(dropped.counted);
    CHECK(dropped.uncounted_bytes == zeroed.size() - last.offset - last.size);
  }
  SECTION("zeros from a record boundary on: no record seen, how many is unknown") {
    auto zeroed = bytes;
    std::fill(zeroed.begin() + static_cast<std::ptrdiff_t>(last.offset), zeroed.end(), '\0');
    auto dropped = scale::detail::inspect_dropped(zeroed, decode_log(zeroed).valid_end);
    CHECK(dropped.records == 0);
    CHECK_FALSE(dropped.counted);
    CHECK(dropped.uncounted_bytes == last.size);
  }
  SECTION("nothing dropped") {
    auto dropped = scale::detail::inspect_dropped(bytes, bytes.size());
    CHECK(dropped.bytes == 0);
    CHECK(dropped.records == 0);
    CHECK(dropped.counted);
  }
}

TEST_CASE("a damaged record with more data after it is corruption, found at its byte offset", "[store_log]") {
  auto bytes = three_records();
  auto second = decode_log(bytes).records[1];
  SECTION("in its payload") { bytes[second.offset + scale::detail::record_header_size + 2] ^= 0x01; }
  SECTION("in its header") { bytes[second.offset] ^= 0x40; }
  auto decoded = decode_log(bytes);
  CHECK(decoded.tail == LogTail::corrupt);
  CHECK(decoded.valid_end == second.offset);
  CHECK(decoded.records.size() == 1);
  CHECK_FALSE(decoded.problem.empty());
}

TEST_CASE("a record with a valid checksum but malformed content is corruption", "[store_log]") {
  std::string bytes;
  scale::detail::encode_record(bytes, write_record(1, {{"k", "{not json", false}}));
  auto decoded = decode_log(bytes);
  CHECK(decoded.tail == LogTail::corrupt);
  CHECK(decoded.problem.find("JSON") != std::string::npos);
}

TEST_CASE("recovery restores every entry with its revision and timestamp, and the store's revision", "[store_log]") {
  TempDir dir;
  std::map<std::string, scale::Entry> before;
  {
    Durable store(options_for(dir.data()));
    CHECK(store.revision == 0);
    auto& memory = *store.memory;
    CHECK(memory.set_many(json{{"a", 1}, {"b", "two"}, {"c", json{{"nested", {1, 2, 3}}}}}).get() == 1);
    CHECK(memory.erase("b").get());
    CHECK(memory.compare_and_set_revision("a", 1, 10).get() == 3);
    CHECK(memory.compare_and_set_revision("a", 1, 99).get() == 0);  // fails: writes nothing
    CHECK(memory.increment_with_revision("counter", 5).get().revision == 4);
    CHECK(memory.increment_with_revision("counter", 2).get().value == 7);
    CHECK(memory.set_many(json{{"tmp", true}}).get() == 6);
    CHECK(memory.erase("tmp").get());
    before = all_entries(memory);
  }
  Durable again(options_for(dir.data()));
  CHECK(again.revision == 7);
  auto after = all_entries(*again.memory);
  REQUIRE(after.size() == before.size());
  for (const auto& [key, entry] : before) {
    INFO(key);
    REQUIRE(after.count(key) == 1);
    CHECK(after[key].value == entry.value);
    CHECK(after[key].revision == entry.revision);
    CHECK(after[key].timestamp_ms == entry.timestamp_ms);
  }
  CHECK(after.count("b") == 0);
  // The next write continues the revisions.
  CHECK(again.memory->set_many(json{{"d", 4}}).get() == 8);
}

TEST_CASE("a torn tail on disk is dropped with a warning, the file truncated and the rest recovered", "[store_log]") {
  TempDir dir;
  {
    Durable store(options_for(dir.data()));
    for (int i = 1; i <= 5; ++i) (void)store.memory->set_many(json{{"k" + std::to_string(i), i}}).get();
  }
  auto log = files_named(dir.data(), "log.").at(0);
  auto intact = fs::file_size(log);
  // Half of a sixth record, as a write interrupted by kill -9 or a power loss leaves it.
  std::string sixth;
  scale::detail::encode_record(sixth, write_record(6, {{"k6", "6", false}}));
  {
    std::ofstream out(log, std::ios::binary | std::ios::app);
    out.write(sixth.data(), static_cast<std::streamsize>(sixth.size() / 2));
  }
  Durable again(options_for(dir.data()));
  CHECK(again.revision == 5);
  CHECK(all_entries(*again.memory).size() == 5);
  CHECK(fs::file_size(log) == intact);
  CHECK(again.memory->set_many(json{{"k6", 6}}).get() == 6);
}

TEST_CASE("corruption before the end of the log refuses to start, naming the file and byte offset", "[store_log]") {
  TempDir dir;
  {
    Durable store(options_for(dir.data()));
    for (int i = 1; i <= 5; ++i) (void)store.memory->set_many(json{{"k" + std::to_string(i), i}}).get();
  }
  auto log = files_named(dir.data(), "log.").at(0);
  auto bytes = read_file(log);
  auto third = decode_log(bytes).records.at(2);
  bytes[third.offset + third.size - 2] ^= 0x10;
  write_file(log, bytes);
  try {
    scale::detail::RecoveredMemory recovered;
    (void)scale::detail::StoreLog::open(options_for(dir.data()), recovered);
    FAIL("a corrupt log was accepted");
  } catch (const scale::Error& error) {
    std::string message = error.what();
    CHECK(message.find(log.string()) != std::string::npos);
    CHECK(message.find("byte offset " + std::to_string(third.offset)) != std::string::npos);
    CHECK(message.find("truncate -s " + std::to_string(third.offset)) != std::string::npos);
  }
  // Nothing was changed: the file is as it was.
  CHECK(read_file(log) == bytes);
}

TEST_CASE("a data directory whose parents are missing is created with them", "[store_log]") {
  TempDir dir;
  auto nested = dir.path / "a" / "b" / "c";
  {
    Durable store(options_for(nested.string()));
    CHECK(store.memory->set_many(json{{"k", 1}}).get() == 1);
  }
  CHECK(fs::is_directory(nested));
  Durable again(options_for(nested.string()));
  CHECK(again.revision == 1);
}

TEST_CASE("a second store on the same data directory is refused while the first has it", "[store_log]") {
  TempDir dir;
  auto first = std::make_unique<Durable>(options_for(dir.data()));
  scale::detail::RecoveredMemory recovered;
  CHECK_THROWS_WITH(scale::detail::StoreLog::open(options_for(dir.data()), recovered),
                    Catch::Contains("in use by another scale-store"));
  first.reset();
  CHECK_NOTHROW(Durable(options_for(dir.data())));
}

TEST_CASE("after recovery a watch from within the kept history replays it and an older one gets Compacted",
          "[store_log]") {
  TempDir dir;
  auto options = options_for(dir.data());
  options.history = 3;
  {
    Durable store(options);
    for (int i = 1; i <= 10; ++i) (void)store.memory->set_many(json{{"k", i}}).get();
  }
  Durable again(options);
  std::mutex mutex;
  std::vector<scale::Revision> seen;
  auto recent = watch(*again.memory, 8, seen, mutex);
  recent->ready().get();
  (void)again.memory->set_many(json{{"k", 11}}).get();
  {
    std::lock_guard lock(mutex);
    CHECK(seen == std::vector<scale::Revision>{8, 9, 10, 11});
  }
  std::vector<scale::Revision> none;
  auto old = watch(*again.memory, 7, none, mutex);
  CHECK_THROWS_AS(old->ready().get(), scale::Compacted);
  auto oldest = watch(*again.memory, 1, none, mutex);
  CHECK_THROWS_AS(oldest->ready().get(), scale::Compacted);
  recent->cancel();
}

TEST_CASE("compaction writes a snapshot, shrinks the log and keeps every entry and revision", "[store_log]") {
  TempDir dir;
  auto options = options_for(dir.data(), scale::FsyncPolicy::no);  // fast: 3,000 writes one after another
  options.compact_min_bytes = 8 * 1024;
  std::map<std::string, scale::Entry> before;
  std::uint64_t compactions = 0;
  {
    Durable store(options);
    // In bursts of 50 writes (about 3.5 KiB of log), each after the compaction in progress is
    // done, so the log cannot outgrow the threshold by much while a snapshot is being fsync'd.
    for (int i = 1; i <= 3000; ++i) {
      if (i % 100 == 0)
        (void)store.memory->erase("key" + std::to_string(i % 40)).get();
      else
        (void)store.memory->set_many(json{{"key" + std::to_string(i % 40), json{{"i", i}, {"pad", "........"}}}}).get();
      if (i % 50 == 0) {
        auto deadline = std::chrono::steady_clock::now() + 5s;
        while (store.log->compacting() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
      }
    }
    store.log->close();  // waits for a compaction in progress
    compactions = store.log->compactions();
    before = all_entries(*store.memory);
  }
  CHECK(compactions >= 10);
  auto snapshots = files_named(dir.data(), "snapshot.");
  REQUIRE(snapshots.size() == 1);
  auto logs = files_named(dir.data(), "log.");
  REQUIRE(logs.size() == 1);
  // 3,000 records of about 70 bytes were logged; what is left is less than the threshold plus
  // the two bursts that can come while a compaction runs.
  CHECK(fs::file_size(logs[0]) < 3 * options.compact_min_bytes);
  Durable again(options);
  CHECK(again.revision == 3000);
  auto after = all_entries(*again.memory);
  REQUIRE(after.size() == before.size());
  for (const auto& [key, entry] : before) {
    INFO(key);
    CHECK(after[key].value == entry.value);
    CHECK(after[key].revision == entry.revision);
    CHECK(after[key].timestamp_ms == entry.timestamp_ms);
  }
}

TEST_CASE("writes keep flowing and stay ordered while compactions run", "[store_log]") {
  TempDir dir;
  auto options = options_for(dir.data(), scale::FsyncPolicy::no);
  options.compact_min_bytes = 4 * 1024;
  {
    Durable store(options);
    std::vector<std::thread> writers;
    for (int t = 0; t < 4; ++t)
      writers.emplace_back([&, t] {
        for (int i = 0; i < 1500; ++i)
          (void)store.memory->increment_with_revision("counter" + std::to_string(t), 1).get();
      });
    for (auto& writer : writers) writer.join();
    store.log->close();
    CHECK(store.log->compactions() >= 1);
  }
  Durable again(options);
  CHECK(again.revision == 6000);
  for (int t = 0; t < 4; ++t) CHECK(again.memory->entry("counter" + std::to_string(t)).get()->value == 1500);
}

TEST_CASE("a compaction interrupted at any step leaves a directory that recovers", "[store_log]") {
  // The files a compaction from log.1 (revisions 1-5) to snapshot.2 + log.2 (6-7) passes through.
  std::string log1, log2, snapshot;
  for (int r = 1; r <= 5; ++r)
    scale::detail::encode_record(log1, write_record(r, {{"k" + std::to_string(r % 3), std::to_string(r), false}}));
  for (int r = 6; r <= 7; ++r)
    scale::detail::encode_record(log2, write_record(r, {{"k" + std::to_string(r % 3), std::to_string(r), false}}));
  {
    LogRecord begin;
    begin.kind = RecordKind::snapshot_begin;
    begin.revision = 5;
    scale::detail::encode_record(snapshot, begin);
    for (int r = 3; r <= 5; ++r)
      scale::detail::encode_record(snapshot,
                                   write_record(r, {{"k" + std::to_string(r % 3), std::to_string(r), false}}));
    LogRecord end = begin;
    end.kind = RecordKind::snapshot_end;
    scale::detail::encode_record(snapshot, end);
  }
  TempDir dir;
  fs::create_directories(dir.data());
  auto data = fs::path(dir.data());
  write_file(data / "log.0000000001", log1);

  SECTION("the new log exists and the snapshot is still a temporary file (cut short)") {
    write_file(data / "log.0000000002", log2);
    write_file(data / "snapshot.0000000002.tmp", snapshot.substr(0, snapshot.size() / 2));
  }
  SECTION("the snapshot is in place but the old log and snapshot were not removed yet") {
    write_file(data / "log.0000000002", log2);
    write_file(data / "snapshot.0000000002", snapshot);
  }
  SECTION("the new log was not created yet") { write_file(data / "snapshot.0000000002.tmp", ""); }
  Durable store(options_for(dir.data()));
  bool has_log2 = fs::exists(data / "log.0000000002");
  CHECK(store.revision == (has_log2 ? 7 : 5));
  auto entries = all_entries(*store.memory);
  REQUIRE(entries.size() == 3);
  CHECK(entries["k0"].value == (has_log2 ? 6 : 3));
  CHECK(entries["k1"].value == (has_log2 ? 7 : 4));
  CHECK(entries["k2"].value == 5);
  CHECK(files_named(data, "snapshot.0000000002.tmp").empty());
  if (fs::exists(data / "snapshot.0000000002")) CHECK_FALSE(fs::exists(data / "log.0000000001"));
}

TEST_CASE("a stray higher-numbered snapshot is refused instead of deleting the newer logs", "[store_log]") {
  TempDir dir;
  auto data = fs::path(dir.data());
  auto options = options_for(dir.data(), scale::FsyncPolicy::no);
  options.compact_min_bytes = 2048;
  {
    Durable store(options);
    for (int i = 1; i <= 40; ++i) {
      (void)store.memory->set_many(json{{"k" + std::to_string(i % 5), std::string(100, 'x')}}).get();
      auto deadline = std::chrono::steady_clock::now() + 5s;
      while (store.log->compacting() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    }
    store.log->close();
    REQUIRE(store.log->compactions() >= 1);
  }
  {
    Durable store(options_for(dir.data()));
    for (int i = 0; i < 5; ++i) (void)store.memory->set_many(json{{"after", i}}).get();
  }
  auto snapshot = files_named(data, "snapshot.").at(0);
  auto logs_before = files_named(data, "log.");
  REQUIRE(logs_before.size() == 1);
  // Its first record is the header: the generation it was made for and its revision.
  auto header = decode_log(read_file(snapshot)).records.at(0);
  CHECK(header.kind == RecordKind::header);
  CHECK(snapshot.filename().string() == "snapshot." + std::string(10 - std::to_string(header.generation).size(), '0') +
                                            std::to_string(header.generation));
  auto log_header = decode_log(read_file(logs_before[0])).records.at(0);
  CHECK(log_header.kind == RecordKind::header);
  CHECK(log_header.revision == header.revision + 1);

  fs::copy_file(snapshot, data / "snapshot.0000000099");
  scale::detail::RecoveredMemory recovered;
  try {
    (void)scale::detail::StoreLog::open(options_for(dir.data()), recovered);
    FAIL("a stray snapshot was used");
  } catch (const scale::Error& error) {
    std::string message = error.what();
    CHECK(message.find((data / "snapshot.0000000099").string()) != std::string::npos);
    CHECK(message.find(logs_before[0].string()) != std::string::npos);
    CHECK(message.find("written as '" + snapshot.filename().string()) != std::string::npos);
    CHECK(message.find("Move '") != std::string::npos);
  }
  CHECK(files_named(data, "log.") == logs_before);  // nothing was deleted
  fs::remove(data / "snapshot.0000000099");
  Durable store(options_for(dir.data()));
  CHECK(store.revision == 45);  // 40 writes, then 5 more
}

TEST_CASE("an old-format directory (no headers) recovers, and a stray snapshot in it is refused by revision",
          "[store_log]") {
  // The files as scale-store wrote them before logs and snapshots had headers: snapshot.2 holds
  // revision 5, log.2 revisions 6 and 7.
  std::string log2, snapshot;
  for (int r = 6; r <= 7; ++r) scale::detail::encode_record(log2, write_record(r, {{"k", std::to_string(r), false}}));
  LogRecord begin;
  begin.kind = RecordKind::snapshot_begin;
  begin.revision = 5;
  scale::detail::encode_record(snapshot, begin);
  scale::detail::encode_record(snapshot, write_record(5, {{"k", "5", false}}));
  LogRecord end = begin;
  end.kind = RecordKind::snapshot_end;
  scale::detail::encode_record(snapshot, end);
  TempDir dir;
  fs::create_directories(dir.data());
  auto data = fs::path(dir.data());
  write_file(data / "snapshot.0000000002", snapshot);
  write_file(data / "log.0000000002", log2);
  SECTION("it recovers") {
    Durable store(options_for(dir.data()));
    CHECK(store.revision == 7);
    CHECK(store.memory->entry("k").get()->value == 7);
  }
  SECTION("a copy of its snapshot under a higher number is refused") {
    write_file(data / "snapshot.0000000009", snapshot);
    scale::detail::RecoveredMemory recovered;
    CHECK_THROWS_WITH(scale::detail::StoreLog::open(options_for(dir.data()), recovered),
                      Catch::Contains("snapshot.0000000009") && Catch::Contains("log.0000000002") &&
                          Catch::Contains("up to revision 7"));
    CHECK(fs::exists(data / "log.0000000002"));
  }
}

TEST_CASE("a missing log file between a snapshot and a later log is refused, not skipped", "[store_log]") {
  std::string log3;
  scale::detail::encode_record(log3, write_record(9, {{"k", "9", false}}));
  TempDir dir;
  fs::create_directories(dir.data());
  write_file(fs::path(dir.data()) / "log.0000000003", log3);
  scale::detail::RecoveredMemory recovered;
  CHECK_THROWS_WITH(scale::detail::StoreLog::open(options_for(dir.data()), recovered),
                    Catch::Contains("revision 1 was expected"));
}

TEST_CASE("concurrent writers under --fsync always share fsyncs and each is acknowledged after one", "[store_log]") {
  TempDir dir;
  Durable store(options_for(dir.data(), scale::FsyncPolicy::always));
  constexpr int threads = 16, writes = 40;
  std::vector<std::thread> writers;
  std::atomic<int> acknowledged{0};
  for (int t = 0; t < threads; ++t)
    writers.emplace_back([&, t] {
      for (int i = 0; i < writes; ++i) {
        (void)store.memory->set_many(json{{"w" + std::to_string(t), i}}).get();
        ++acknowledged;
      }
    });
  for (auto& writer : writers) writer.join();
  CHECK(acknowledged == threads * writes);
  auto fsyncs = store.log->fsyncs();
  CHECK(fsyncs >= 1);
  CHECK(fsyncs < static_cast<std::uint64_t>(threads * writes));
  WARN("fsyncs for " << threads * writes << " writes: " << fsyncs);
}

TEST_CASE("under --fsync no, fsync is never called while serving, and close() fsyncs once", "[store_log]") {
  TempDir dir;
  Durable store(options_for(dir.data(), scale::FsyncPolicy::no));
  for (int i = 0; i < 50; ++i) (void)store.memory->set_many(json{{"k", i}}).get();
  CHECK(store.log->fsyncs() == 0);
  store.log->close();
  CHECK(store.log->fsyncs() == 1);
}

TEST_CASE("under --fsync everysec, a write is acknowledged before fsync, which follows within about a second",
          "[store_log]") {
  TempDir dir;
  Durable store(options_for(dir.data(), scale::FsyncPolicy::everysec));
  for (int i = 0; i < 50; ++i) (void)store.memory->set_many(json{{"k", i}}).get();
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (store.log->fsyncs() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
  CHECK(store.log->fsyncs() >= 1);
  CHECK(store.log->fsyncs() < 50);
}

TEST_CASE("a write made after the log is closed fails instead of being acknowledged", "[store_log]") {
  TempDir dir;
  Durable store(options_for(dir.data()));
  store.log->close();
  auto write = store.memory->set_many(json{{"k", 1}});
  store.log.reset();
  store.memory.reset();  // the last owner of the log: its pending writes fail
  CHECK_THROWS_AS(write.get(), scale::JournalError);
}

#ifdef SCALE_STORE_BINARY
namespace {

/// scale-store started with `args`; its output (stdout and stderr) is read for the port and kept.
struct StoreProcess {
  explicit StoreProcess(const std::vector<std::string>& args) {
    pid = support::spawn_with_log(SCALE_STORE_BINARY, args, log_fd, /*stdout_too=*/true);
  }
  ~StoreProcess() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    ::close(log_fd);
  }

  /// Reads stderr until `pattern` matches or the program closes it; the match, if any.
  std::optional<std::smatch> read_until(const std::regex& pattern) {
    char chunk[4096];
    std::smatch match;
    while (!std::regex_search(log, match, pattern)) {
      auto n = ::read(log_fd, chunk, sizeof chunk);
      if (n <= 0) return std::nullopt;
      log.append(chunk, static_cast<std::size_t>(n));
    }
    return match;
  }
  std::uint16_t wait_for_port() {
    auto match = read_until(std::regex("listening on http://127\\.0\\.0\\.1:([0-9]+)"));
    if (!match) throw std::runtime_error("scale-store did not start: " + log);
    return static_cast<std::uint16_t>(std::stoi((*match)[1]));
  }
  /// Waits for the program to exit; its exit status.
  int wait() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
    return status;
  }

  pid_t pid = -1;
  int log_fd = -1;
  std::string log;
};

/// One keep-alive connection; request() answers the status and body, or nullopt once the
/// connection failed (the server went away).
class Connection {
 public:
  explicit Connection(std::uint16_t port) : m_fd(support::connect_loopback(port)) {}
  ~Connection() { ::close(m_fd); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  std::optional<std::pair<int, std::string>> request(const std::string& method, const std::string& target,
                                                     const std::string& body = {}) {
    std::string text = method + " " + target +
                       " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                       body;
    for (std::string_view rest = text; !rest.empty();) {
      auto n = ::send(m_fd, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n <= 0) return std::nullopt;
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    std::size_t head_end;
    while ((head_end = m_buffer.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return std::nullopt;
    std::string head = m_buffer.substr(0, head_end);
    int status = std::stoi(head.substr(head.find(' ') + 1, 3));
    std::smatch match;
    std::size_t length = 0;
    if (std::regex_search(head, match, std::regex("[Cc]ontent-[Ll]ength: *([0-9]+)"))) length = std::stoul(match[1]);
    while (m_buffer.size() < head_end + 4 + length)
      if (!fill()) return std::nullopt;
    std::string reply_body = m_buffer.substr(head_end + 4, length);
    m_buffer.erase(0, head_end + 4 + length);
    return std::make_pair(status, reply_body);
  }

 private:
  bool fill() {
    char chunk[16384];
    auto n = ::recv(m_fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    m_buffer.append(chunk, static_cast<std::size_t>(n));
    return true;
  }
  int m_fd = -1;
  std::string m_buffer;
};

/// The value of the unlabelled series `name` in GET /metrics.
std::uint64_t metric(Connection& connection, const std::string& name) {
  auto reply = connection.request("GET", "/metrics");
  REQUIRE(reply);
  std::smatch match;
  INFO(reply->second);
  REQUIRE(std::regex_search(reply->second, match, std::regex("\n" + name + " ([0-9]+)\n")));
  return std::stoull(match[1]);
}

}  // namespace

TEST_CASE("scale-store killed with kill -9 under --fsync always keeps every acknowledged write", "[store_log][store]") {
  TempDir dir;
  struct Acknowledged {
    std::string key;
    std::int64_t value;
    std::int64_t revision;
  };
  std::vector<std::vector<Acknowledged>> acknowledged(6);
  {
    StoreProcess store({"--port", "0", "--data-dir", dir.data(), "--fsync", "always"});
    auto port = store.wait_for_port();
    std::atomic<bool> go{false};
    std::vector<std::thread> writers;
    for (std::size_t t = 0; t < acknowledged.size(); ++t)
      writers.emplace_back([&, t] {
        Connection connection(port);
        while (!go) std::this_thread::yield();
        for (std::int64_t i = 1;; ++i) {
          std::string key = "writer" + std::to_string(t) + "-" + std::to_string(i % 7);
          auto reply = connection.request("PUT", "/v1/kv/" + key, std::to_string(i));
          if (!reply) return;  // the server is gone
          if (reply->first != 200) throw std::runtime_error("PUT answered " + std::to_string(reply->first));
          acknowledged[t].push_back({key, i, json::parse(reply->second).at("revision").get<std::int64_t>()});
        }
      });
    go = true;
    std::this_thread::sleep_for(700ms);
    REQUIRE(::kill(store.pid, SIGKILL) == 0);
    int status = store.wait();
    CHECK(WIFSIGNALED(status));
    for (auto& writer : writers) writer.join();
  }
  std::map<std::string, Acknowledged> latest;  // per key, the last acknowledged write
  std::size_t total = 0;
  for (const auto& writes : acknowledged) {
    total += writes.size();
    for (const auto& write : writes) latest[write.key] = write;
  }
  REQUIRE(total > 50);  // the kill happened mid-stream, after many writes

  StoreProcess restarted({"--port", "0", "--data-dir", dir.data(), "--fsync", "always"});
  auto port = restarted.wait_for_port();
  Connection connection(port);
  for (const auto& [key, write] : latest) {
    INFO(key << " last acknowledged " << write.value << " at revision " << write.revision);
    auto reply = connection.request("GET", "/v1/kv/" + key);
    REQUIRE(reply);
    REQUIRE(reply->first == 200);
    auto entry = json::parse(reply->second);
    // The acknowledged value, or a later write to the key that was made but not acknowledged.
    CHECK(entry.at("revision").get<std::int64_t>() >= write.revision);
    if (entry.at("revision").get<std::int64_t>() == write.revision) {
      CHECK(entry.at("value") == write.value);
    } else {
      CHECK(entry.at("value").get<std::int64_t>() > write.value);
    }
  }
  WARN(total << " writes acknowledged before kill -9");
}

TEST_CASE("scale-store stopped with SIGTERM under --fsync no has every write after a restart", "[store_log][store]") {
  TempDir dir;
  {
    StoreProcess store({"--port", "0", "--data-dir", dir.data(), "--fsync", "no"});
    Connection connection(store.wait_for_port());
    for (int i = 0; i < 20; ++i)
      REQUIRE(connection.request("PUT", "/v1/kv/k" + std::to_string(i), std::to_string(i))->first == 200);
    REQUIRE(::kill(store.pid, SIGTERM) == 0);
    int status = store.wait();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  StoreProcess restarted({"--port", "0", "--data-dir", dir.data(), "--fsync", "no"});
  Connection connection(restarted.wait_for_port());
  auto listed = connection.request("GET", "/v1/kv?prefix=k");
  REQUIRE(listed);
  REQUIRE(listed->first == 200);
  auto entries = json::parse(listed->second);
  REQUIRE(entries.size() == 20);
  for (const auto& entry : entries) CHECK(entry.at("value") == std::stoi(entry.at("key").get<std::string>().substr(1)));
}

TEST_CASE("scale-store refuses a corrupt log and a locked data directory, saying why", "[store_log][store]") {
  TempDir dir;
  {
    StoreProcess first({"--port", "0", "--data-dir", dir.data()});
    auto port = first.wait_for_port();
    Connection connection(port);
    for (int i = 0; i < 5; ++i) REQUIRE(connection.request("PUT", "/v1/kv/k" + std::to_string(i), "1")->first == 200);
    auto metrics = connection.request("GET", "/metrics");
    REQUIRE(metrics);
    std::smatch match;
    REQUIRE(std::regex_search(metrics->second, match, std::regex("\nscale_store_fsyncs_total ([0-9]+)\n")));
    CHECK(std::stoi(match[1]) >= 5);

    StoreProcess second({"--port", "0", "--data-dir", dir.data()});
    int status = second.wait();
    second.read_until(std::regex("a^"));  // to the end
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) != 0);
    CHECK(second.log.find("in use by another scale-store") != std::string::npos);

    REQUIRE(::kill(first.pid, SIGTERM) == 0);
    status = first.wait();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  auto log = files_named(dir.data(), "log.").at(0);
  auto bytes = read_file(log);
  auto second_record = decode_log(bytes).records.at(1);
  bytes[second_record.offset + 20] ^= 0x04;
  write_file(log, bytes);
  StoreProcess refused({"--port", "0", "--data-dir", dir.data()});
  int status = refused.wait();
  refused.read_until(std::regex("a^"));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(refused.log.find("byte offset " + std::to_string(second_record.offset)) != std::string::npos);
}

TEST_CASE("scale-store rejects bad flag values and --help documents every flag", "[store_log][store]") {
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--fsync", "sometimes"}, std::vector<std::string>{"--io-threads", "0"}}) {
    StoreProcess bad(args);
    int status = bad.wait();
    bad.read_until(std::regex("a^"));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) != 0);
    CHECK(bad.log.find(args[0]) != std::string::npos);
  }
  int status = 0;

  StoreProcess help({"--help"});
  status = help.wait();
  help.read_until(std::regex("a^"));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  for (const char* text :
       {"--host", "--port", "--token", "--max-body", "--max-connections", "--cors-origin", "--history", "--io-threads",
        "--data-dir", "--fsync", "always", "everysec", "--compact-min-bytes"})
    CHECK(help.log.find(text) != std::string::npos);
}

TEST_CASE("a log rotation that cannot create the next log keeps the writes going, is logged, and is retried",
          "[store_log][store]") {
  TempDir dir;
  auto data = fs::path(dir.data());
  const std::string pad(120, '.');
  int written = 0;
  {
    StoreProcess store({"--port", "0", "--data-dir", dir.data(), "--fsync", "no", "--compact-min-bytes", "2048"});
    Connection connection(store.wait_for_port());
    // A directory where the next log must go: open(O_CREAT) fails with EISDIR, as it would with
    // EMFILE or EACCES.
    fs::create_directory(data / "log.0000000002");
    auto put = [&] {
      ++written;
      auto reply = connection.request("PUT", "/v1/kv/k" + std::to_string(written % 20),
                                      json{{"i", written}, {"pad", pad}}.dump());
      REQUIRE(reply);
      INFO("write " << written << ": " << reply->second);
      REQUIRE(reply->first == 200);
    };
    // About 170 bytes a write: the log passes 2048 bytes, and a rotation is tried, within 20.
    for (int i = 0; i < 200; ++i) put();
    CHECK(metric(connection, "scale_store_compaction_failures_total") >= 1);
    CHECK(
        store.read_until(std::regex("compaction failed \\(1 in a row\\): cannot create the log '[^']*log\\.0000000002'"
                                    "[^\\n]*retrying in")));
    auto health = connection.request("GET", "/healthz");
    REQUIRE(health);
    CHECK(health->first == 200);  // the log itself is fine
    CHECK(metric(connection, "scale_store_compactions_total") == 0);

    fs::remove(data / "log.0000000002");  // the cause is gone: a later attempt succeeds
    while (metric(connection, "scale_store_compactions_total") == 0) {
      REQUIRE(written < 200'000);
      put();
    }
    CHECK(store.read_until(std::regex("compaction into '[^']*snapshot\\.0000000002' succeeded after [0-9]+ failed")));
    REQUIRE(::kill(store.pid, SIGTERM) == 0);
    int status = store.wait();
    CHECK(WIFEXITED(status));
  }
  CHECK_FALSE(files_named(data, "snapshot.").empty());
  CHECK_FALSE(fs::exists(data / "log.0000000001"));
  StoreProcess restarted({"--port", "0", "--data-dir", dir.data(), "--fsync", "no"});
  Connection connection(restarted.wait_for_port());
  for (int k = 0; k < 20; ++k) {
    // The last write to key k was the largest i <= written with i % 20 == k.
    int last = written - ((written - k) % 20 + 20) % 20;
    auto reply = connection.request("GET", "/v1/kv/k" + std::to_string(k));
    REQUIRE(reply);
    REQUIRE(reply->first == 200);
    CHECK(json::parse(reply->second).at("value").at("i") == last);
  }
}

TEST_CASE("a failed write of the log fails that write and every later one, and /healthz answers 503 with why",
          "[store_log][store]") {
  TempDir dir;
  // A write past RLIMIT_FSIZE fails with EFBIG (a real failed write, as a full disk's ENOSPC);
  // the child inherits the ignored SIGXFSZ, which would otherwise kill it.
  auto previous = ::signal(SIGXFSZ, SIG_IGN);
  StoreProcess store({"--port", "0", "--data-dir", dir.data()});
  ::signal(SIGXFSZ, previous);
  Connection connection(store.wait_for_port());
  REQUIRE(connection.request("PUT", "/v1/kv/before", "1")->first == 200);
  auto health = connection.request("GET", "/healthz");
  REQUIRE(health);
  CHECK(health->first == 200);

  auto log = files_named(dir.data(), "log.").at(0);
  rlimit limit{static_cast<rlim_t>(fs::file_size(log) + 8), RLIM_INFINITY};
  REQUIRE(::prlimit(store.pid, RLIMIT_FSIZE, &limit, nullptr) == 0);
  auto failed = connection.request("PUT", "/v1/kv/after", "\"a value longer than eight bytes\"");
  REQUIRE(failed);
  CHECK(failed->first == 500);
  CHECK(json::parse(failed->second).at("type") == "JournalError");
  CHECK(store.read_until(std::regex("cannot write to '[^']*log\\.0000000001'")));

  limit.rlim_cur = RLIM_INFINITY;  // the cause is gone, but the log cannot be trusted until a restart
  REQUIRE(::prlimit(store.pid, RLIMIT_FSIZE, &limit, nullptr) == 0);
  health = connection.request("GET", "/healthz");
  REQUIRE(health);
  CHECK(health->first == 503);
  auto reason = json::parse(health->second);
  CHECK(reason.at("type") == "JournalError");
  CHECK(reason.at("error").get<std::string>().find("log.0000000001") != std::string::npos);
  auto later = connection.request("PUT", "/v1/kv/later", "2");
  REQUIRE(later);
  CHECK(later->first == 500);
  auto read = connection.request("GET", "/v1/kv/before");  // reads go on
  REQUIRE(read);
  CHECK(read->first == 200);
}

TEST_CASE("scale-store recovering a zeroed log end says which file, bytes and revisions it dropped, and counts them",
          "[store_log][store]") {
  TempDir dir;
  {
    StoreProcess store({"--port", "0", "--data-dir", dir.data(), "--fsync", "always"});
    Connection connection(store.wait_for_port());
    const std::string value = json{{"pad", std::string(80, '.')}}.dump();
    for (int i = 1; i <= 20; ++i)
      REQUIRE(connection.request("PUT", "/v1/kv/k" + std::to_string(i), value)->first == 200);
    REQUIRE(::kill(store.pid, SIGTERM) == 0);
    store.wait();
  }
  auto log = files_named(dir.data(), "log.").at(0);
  auto bytes = read_file(log);
  auto records = decode_log(bytes).records;
  if (!records.empty() && records.front().kind == RecordKind::header) records.erase(records.begin());
  REQUIRE(records.size() == 20);
  // The disk zeroed the last records, from the middle of revision 9's on: 12 acknowledged writes.
  const std::size_t from = records[8].offset + 20;
  std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(from), bytes.end(), '\0');
  write_file(log, bytes);

  StoreProcess restarted({"--port", "0", "--data-dir", dir.data()});
  auto port = restarted.wait_for_port();
  INFO(restarted.log);
  const std::string expected = "recovery dropped the end of the log '" + log.string() + "': bytes " +
                               std::to_string(records[8].offset) + " to " + std::to_string(bytes.size() - 1) + " (" +
                               std::to_string(bytes.size() - records[8].offset) + " bytes";
  CHECK(restarted.log.find(expected) != std::string::npos);
  CHECK(restarted.log.find("at least 1 record") != std::string::npos);
  CHECK(restarted.log.find("revisions 9 to unknown") != std::string::npos);
  CHECK(restarted.log.find("starts at revision 8") != std::string::npos);
  Connection connection(port);
  CHECK(metric(connection, "scale_store_recovery_dropped_records") == 1);
  CHECK(metric(connection, "scale_store_recovery_dropped_bytes") == bytes.size() - records[8].offset);
  CHECK(metric(connection, "scale_store_revision") == 8);
}
#endif
