#pragma once
// What runs the chunks a cluster worker took (src/cluster/worker.cpp): up to its concurrency at
// once, on threads of its own (--scale-threads N), or through a ProcessPoolManager of its own
// (--scale-processes N), whose child may die with a chunk while the worker itself stays joined.
//
// Why it works the way it does:
//   - A chunk given wakes one thread (the one that takes it), and a chunk that ends wakes only
//     those waiting for room or for the runner to be idle: never every thread and the reader.
//   - A worker of one thread (the default) runs its chunks on the thread that read them, inside
//     run(): handing each to a thread of its own would cost two thread switches per chunk, and
//     the reader has nothing else to do while its one chunk runs. Chunks read together then run
//     one after another there, as they would on the one thread.
//   - Room may include chunks read ahead (core/short_chunks.hpp): they wait in the queue, and
//     `starting` tells the worker when each begins, and may decline it (the worker gives it back).

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace scale {
class ProcessPoolManager;
struct RunOptions;
}

namespace scale::detail {

class RunningChunk;
class Job;

/// How a chunk ended on the worker.
struct ChunkOutcome {
  /// skipped: never run, as `starting` declined it (ChunkRunner::run).
  enum class Kind { results, error, lost, skipped } kind = Kind::error;
  /// The results; encode_exception() of the error; or, lost, encode_exception() of the WorkerLost
  /// of the child's death: its status and, when the child died of a crash signal, its capsule,
  /// whose item_index is within the chunk and whose item is left to the manager (it has the items).
  std::string payload;
  std::chrono::microseconds took{0};  ///< how long the chunk ran here
};

class ChunkRunner {
 public:
  /// Called on a runner thread once a chunk has ended.
  using Done = std::function<void(ChunkOutcome)>;

  /// `concurrency` chunks at once (at least 1); with `processes`, each on a child of a process
  /// pool of that many children, started at once.
  ChunkRunner(std::size_t concurrency, bool processes);
  /// Finishes the chunks given, then joins the threads.
  ~ChunkRunner();
  ChunkRunner(const ChunkRunner&) = delete;
  ChunkRunner& operator=(const ChunkRunner&) = delete;

  /// Waits up to `limit` for room, counting `ahead` chunks beyond the concurrency (read ahead,
  /// waiting for a thread); returns how many chunks may be given now without waiting (0 after
  /// the limit).
  std::size_t wait_for_room(std::chrono::milliseconds limit, std::size_t ahead = 0);
  /// Runs the task payload `payload` under `control` (its stop flag and progress; on a process
  /// pool, its stop token and grace go to the child); `starting` (when set) is called just before
  /// it starts, on the thread that runs it, and when it returns false the chunk does not run and
  /// `done` gets Kind::skipped; else `done` gets how it ended. On a worker of one thread with
  /// nothing else given, it runs here, before run() returns.
  void run(std::string payload, std::shared_ptr<RunningChunk> control, Done done,
           std::function<bool()> starting = {});
  /// Chunks given and not yet ended (running, or waiting for a thread).
  std::size_t busy() const;
  /// Changes how many chunks run at once. Any thread; returns at once: a thread above the new
  /// count retires after its chunk, and a process pool of the new size replaces the old one once
  /// the old one's chunks have ended.
  void set_concurrency(std::size_t concurrency);
  /// A setup (on_every_worker) the worker ran in its own process: with --scale-processes, every
  /// child runs it too before its next chunk, those of a pool that set_concurrency makes included.
  /// Nothing with threads, which share the worker's process. Main thread.
  void add_setup(std::string payload);
  std::size_t concurrency() const;
  /// Waits until every chunk given has ended (its Done has returned).
  void wait_idle();

 private:
  struct Item {
    std::string payload;
    std::shared_ptr<RunningChunk> control;
    Done done;
    std::function<bool()> starting;
  };
  void serve(std::size_t index);
  /// Runs one item to its Done (any thread, without the lock).
  void execute(Item& item);
  ChunkOutcome run_here(const std::string& payload, RunningChunk& control);
  ChunkOutcome run_in_child(const std::string& payload, RunningChunk& control);
  /// The options of the pool's map that runs a chunk: the chunk's stop, grace and progress.
  static void relay_control(const std::string& payload, RunningChunk& control, RunOptions& options);
  std::shared_ptr<ProcessPoolManager> pool();
  void grow_locked();

  const bool m_processes;
  mutable std::mutex m_mutex;
  std::condition_variable m_work;  // the threads: an item, a retirement, the end
  std::condition_variable m_room;  // wait_for_room, wait_idle and the destructor: an item ended, the count changed
  std::size_t m_target;
  std::size_t m_threads_alive = 0;  // serving threads, retiring ones excluded
  std::size_t m_busy = 0;           // items given and not yet done
  bool m_stopping = false;
  std::deque<Item> m_queue;
  std::vector<std::thread> m_threads;
  std::shared_ptr<ProcessPoolManager> m_pool;  // --scale-processes: of m_pool_size children
  std::size_t m_pool_size = 0;
  std::vector<std::shared_ptr<Job>> m_setups;  // --scale-processes: for every pool, in order
};

}  // namespace scale::detail
