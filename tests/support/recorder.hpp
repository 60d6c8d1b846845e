#pragma once
// What a watch or event handler saw, and on which thread; shared by the behaviour suites.
// Handlers run on the loop, where Catch2's assertions must not be used: they record here, and
// the test thread waits on the condition variable (the timeout only turns a hang into a failure).

#include <scale/detail/loop.hpp>
#include <scale/runtime.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace support {

template <class T>
class Recorder {
 public:
  void operator()(const T& item) {
    if (!scale::detail::on_loop_thread()) m_off_loop.fetch_add(1);
    {
      std::lock_guard lock(m_mutex);
      m_items.push_back(item);
    }
    m_cv.notify_all();
  }
  /// Waits (at most 20 s, as a guard against hanging) until `count` items arrived.
  bool wait_for(std::size_t count) {
    std::unique_lock lock(m_mutex);
    return m_cv.wait_for(lock, std::chrono::seconds(20), [&] { return m_items.size() >= count; });
  }
  std::vector<T> items() {
    std::lock_guard lock(m_mutex);
    return m_items;
  }
  std::size_t size() {
    std::lock_guard lock(m_mutex);
    return m_items.size();
  }
  /// How many calls arrived on a thread other than the loop (should be none).
  int off_loop() const { return m_off_loop.load(); }

 private:
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::vector<T> m_items;
  std::atomic<int> m_off_loop{0};
};

/// A handler that forwards to a Recorder the test keeps.
template <class T>
std::function<void(const T&)> into(const std::shared_ptr<Recorder<T>>& recorder) {
  return [recorder](const T& item) { (*recorder)(item); };
}

/// Runs whatever the loop has queued so far (drains posted before this call run before it returns).
inline void flush(scale::Runtime& runtime) {
  runtime.run([] {});
}

}  // namespace support
