// The SharedMemory behaviour suite on the in-process backend journaled to a scale-store log, as
// scale-store runs it with --data-dir (each write's Future completes later, on the log's writer
// thread), and over http:// on a StoreServer embedded in this program with a data directory (its
// answers must not wait for this program's loop, which the suite blocks in a handler).
// Durability must not change what a program observes.

#include <cstddef>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "store/store_log.hpp"
#include <scale/shared_memory.hpp>

#include "support/http_store.hpp"

namespace {

/// A fresh data directory, removed when the test executable exits.
std::string fresh_data_dir() {
  struct Dirs {
    std::mutex mutex;
    std::deque<std::filesystem::path> paths;
    ~Dirs() {
      for (const auto& path : paths) {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
      }
    }
  };
  static Dirs dirs;
  std::string pattern = (std::filesystem::temp_directory_path() / "scale-durable-XXXXXX").string();
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  std::lock_guard lock(dirs.mutex);
  dirs.paths.emplace_back(pattern);
  return pattern + "/data";
}

scale::SharedMemory journaled(std::size_t history) {
  scale::detail::RecoveredMemory recovered;
  auto log = scale::detail::StoreLog::open(
      // `no` keeps the suite fast; the Futures complete on the writer thread under every policy.
      {.dir = fresh_data_dir(), .fsync = scale::FsyncPolicy::no, .history = history}, recovered);
  return scale::SharedMemory(scale::SharedMemory::Options{.history = history, .journal = log});
}

}  // namespace

struct Journaled {
  static scale::SharedMemory make() { return journaled(10'000); }
  static scale::SharedMemory make_with_history(std::size_t history) { return journaled(history); }
};

struct DurableHttp {
  /// Each write waits for an fdatasync of a scale-store process.
  static constexpr int concurrent_rounds = 100;
  static scale::SharedMemory make() { return make_with_history(10'000); }
  static scale::SharedMemory make_with_history(std::size_t history) {
    return scale::SharedMemory(support::fresh_store_url(
        {.history = history, .data_dir = fresh_data_dir(), .fsync = scale::FsyncPolicy::always}));
  }
};

using MemoryBackends = std::tuple<Journaled, DurableHttp>;

#include "shared_memory_suite.hpp"
