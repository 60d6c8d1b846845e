// ThreadPoolManager: one queue of chunks, N threads, Promise-based completion.

#include <scale/managers/thread_pool.hpp>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace scale::detail {

class ThreadPool {
 public:
  explicit ThreadPool(std::size_t threads) {
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    m_threads.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) {
      m_threads.emplace_back([this] { work(); });
      ++m_counters.workers_spawned;
      ++m_counters.workers_alive;
    }
  }

  ~ThreadPool() {
    std::deque<Entry> abandoned;
    {
      std::lock_guard lock(m_mutex);
      m_stopping = true;
      abandoned.swap(m_queue);
    }
    m_cv.notify_all();
    m_counters.queued -= abandoned.size();
    m_counters.failed += abandoned.size();
    auto stopped = std::make_exception_ptr(Stopped());
    for (auto& entry : abandoned) entry.promise.set_exception(stopped);
    abandoned.clear();
    // Threads finish the chunk they are running (its Promise completes normally), then exit.
    for (auto& thread : m_threads) thread.join();
  }

  Future<void> submit(Chunk chunk) {
    Promise<void> promise;
    Future<void> future = promise.get_future();
    {
      std::lock_guard lock(m_mutex);
      if (m_stopping) {
        promise.set_exception(std::make_exception_ptr(Stopped()));
        return future;
      }
      m_queue.push_back(Entry{std::move(chunk), std::move(promise)});
      ++m_counters.queued;
    }
    m_cv.notify_one();
    return future;
  }

  std::size_t size() const noexcept { return m_threads.size(); }
  ManagerStats stats() const noexcept { return m_counters.snapshot(); }

 private:
  struct Entry {
    Chunk chunk;
    Promise<void> promise;
  };

  void work() {
    for (;;) {
      std::optional<Entry> entry;
      {
        std::unique_lock lock(m_mutex);
        m_cv.wait(lock, [&] { return m_stopping || !m_queue.empty(); });
        if (m_stopping) break;
        entry.emplace(std::move(m_queue.front()));
        m_queue.pop_front();
        --m_counters.queued;
        ++m_counters.running;
      }
      std::exception_ptr error;
      try {
        run_chunk_blocking(entry->chunk);
      } catch (...) {
        error = std::current_exception();
      }
      // NOTE: the chunk (and with it possibly the last reference to the Job and the user's
      // function) is released here on the pool thread, after the counters but before the
      // Promise: once the awaiting algorithm resumes, no pool thread touches the Job.
      entry->chunk = Chunk{};
      --m_counters.running;
      if (error) {
        ++m_counters.failed;
        entry->promise.set_exception(std::move(error));
      } else {
        ++m_counters.done;
        entry->promise.set_value();
      }
    }
    --m_counters.workers_alive;
  }

  mutable std::mutex m_mutex;
  std::condition_variable m_cv;
  std::deque<Entry> m_queue;
  bool m_stopping = false;
  TaskCounters m_counters;
  std::vector<std::thread> m_threads;  // last: started after everything they use exists
};

}  // namespace scale::detail

namespace scale {

ThreadPoolManager::ThreadPoolManager(std::size_t threads) : m_pool(std::make_unique<detail::ThreadPool>(threads)) {}
ThreadPoolManager::~ThreadPoolManager() = default;

Future<void> ThreadPoolManager::submit(detail::Chunk chunk) { return m_pool->submit(std::move(chunk)); }
std::size_t ThreadPoolManager::concurrency() const noexcept { return m_pool->size(); }
ManagerStats ThreadPoolManager::stats() const { return m_pool->stats(); }

}  // namespace scale
