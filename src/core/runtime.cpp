// The loop thread, the shutdown registry, and Runtime's life cycle.

#include <scale/runtime.hpp>

#include "cluster/worker.hpp"
#include "process/program_arguments.hpp"
#include "process/worker_link.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

namespace scale::detail {

namespace {

thread_local bool t_on_loop_thread = false;

struct LoopItem {
  std::coroutine_handle<> handle;
  UniqueFunction fn;

  void run() noexcept {
    if (handle) {
      handle.resume();
      return;
    }
    try {
      fn();
    } catch (const std::exception& error) {
      log_error(std::string("uncaught exception in a loop callback: ") + error.what());
    } catch (...) {
      log_error("uncaught exception of unknown type in a loop callback");
    }
  }
};

struct Timer {
  std::chrono::steady_clock::time_point when;
  std::uint64_t sequence;
  UniqueFunction fn;
};

struct TimerLater {
  bool operator()(const Timer& a, const Timer& b) const noexcept {
    return a.when != b.when ? a.when > b.when : a.sequence > b.sequence;
  }
};

// NOTE: one process-wide loop object that is never destroyed, so that a thread posting while the
// Runtime shuts down never touches freed memory: it finds `m_running` false and runs inline.
class Loop {
 public:
  void start() {
    std::lock_guard lock(m_mutex);
    if (m_running || m_thread.joinable())
      throw std::logic_error("scale::Runtime already exists: construct one Runtime at a time");
    m_running = true;
    m_quitting = false;
    m_thread = std::thread([this] { run(); });
  }

  /// Drains what is queued (and whatever that queues in turn), drops timers, joins the thread.
  void stop() {
    {
      std::lock_guard lock(m_mutex);
      m_quitting = true;
    }
    m_cv.notify_all();
    if (m_thread.joinable()) m_thread.join();
    // Anything posted between the last drain and m_running = false was run by the thread before
    // it exited; from here on, posts run inline.
  }

  bool running() {
    std::lock_guard lock(m_mutex);
    return m_running;
  }

  void post(LoopItem item) {
    std::unique_lock lock(m_mutex);
    if (!m_running) {
      lock.unlock();
      item.run();
      return;
    }
    m_queue.push_back(std::move(item));
    bool wake = m_waiting;
    lock.unlock();
    if (wake) m_cv.notify_one();
  }

  bool post_at(std::chrono::steady_clock::time_point when, UniqueFunction fn) {
    std::unique_lock lock(m_mutex);
    if (!m_running || m_quitting) return false;
    m_timers.push_back(Timer{when, m_sequence++, std::move(fn)});
    std::push_heap(m_timers.begin(), m_timers.end(), TimerLater{});
    bool wake = m_waiting;
    lock.unlock();
    if (wake) m_cv.notify_one();
    return true;
  }

 private:
  void run() {
    t_on_loop_thread = true;
    std::vector<LoopItem> batch;
    std::vector<UniqueFunction> due;
    std::unique_lock lock(m_mutex);
    for (;;) {
      auto now = std::chrono::steady_clock::now();
      while (!m_timers.empty() && (m_timers.front().when <= now || m_quitting)) {
        std::pop_heap(m_timers.begin(), m_timers.end(), TimerLater{});
        if (!m_quitting) due.push_back(std::move(m_timers.back().fn));
        m_timers.pop_back();
      }
      batch.swap(m_queue);
      if (batch.empty() && due.empty()) {
        if (m_quitting) break;
        m_waiting = true;
        if (m_timers.empty())
          m_cv.wait(lock);
        else
          m_cv.wait_until(lock, std::chrono::steady_clock::time_point(m_timers.front().when));
        m_waiting = false;
        continue;
      }
      lock.unlock();
      for (auto& fn : due) LoopItem{{}, std::move(fn)}.run();
      due.clear();
      for (auto& item : batch) item.run();
      batch.clear();
      lock.lock();
    }
    m_running = false;
    lock.unlock();
    t_on_loop_thread = false;
  }

  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::vector<LoopItem> m_queue;
  std::vector<Timer> m_timers;
  std::uint64_t m_sequence = 0;
  bool m_running = false;
  bool m_quitting = false;
  bool m_waiting = false;
  std::thread m_thread;
};

Loop& the_loop() {
  static Loop* loop = new Loop();  // never destroyed; see the NOTE on Loop
  return *loop;
}

class Registry {
 public:
  void open() {
    std::lock_guard lock(m_mutex);
    m_stopping = false;
  }

  void track(const std::shared_ptr<StateBase>& state) {
    {
      std::lock_guard lock(m_mutex);
      if (!m_stopping) {
        m_states.push_front(state);
        state->m_registry_position = m_states.begin();
        state->m_tracked = true;
        return;
      }
    }
    state->fail(std::make_exception_ptr(Stopped()));
  }

  void untrack(StateBase* state) noexcept {
    std::lock_guard lock(m_mutex);
    if (!state->m_tracked) return;
    state->m_tracked = false;
    m_states.erase(state->m_registry_position);
  }

  /// Fails every pending state with Stopped; states tracked from now on fail at once.
  void stop_all() {
    std::list<std::shared_ptr<StateBase>> states;
    {
      std::lock_guard lock(m_mutex);
      m_stopping = true;
      for (auto& state : m_states) state->m_tracked = false;
      states.swap(m_states);
    }
    auto stopped = std::make_exception_ptr(Stopped());
    for (auto& state : states) state->fail(stopped);
  }

 private:
  std::mutex m_mutex;
  std::list<std::shared_ptr<StateBase>> m_states;
  bool m_stopping = false;
};

Registry& the_registry() {
  static Registry* registry = new Registry();  // outlives every static that may hold a Promise
  return *registry;
}

}  // namespace

bool on_loop_thread() noexcept { return t_on_loop_thread; }
bool loop_running() noexcept { return the_loop().running(); }
void post(std::coroutine_handle<> handle) noexcept { the_loop().post(LoopItem{handle, {}}); }
void post(UniqueFunction fn) noexcept { the_loop().post(LoopItem{{}, std::move(fn)}); }
bool post_at(std::chrono::steady_clock::time_point when, UniqueFunction fn) noexcept {
  return the_loop().post_at(when, std::move(fn));
}
void track(const std::shared_ptr<StateBase>& state) { the_registry().track(state); }
void untrack(StateBase* state) noexcept { the_registry().untrack(state); }

void log_error(std::string_view message) noexcept {
  std::string line;
  try {
    line.reserve(message.size() + 8);
    line.append("scale: ").append(message).append("\n");
    std::fwrite(line.data(), 1, line.size(), stderr);
  } catch (...) {
  }
}

StateBase::~StateBase() {
  if (!m_error || m_consumed.load(std::memory_order_relaxed)) return;
  try {
    std::rethrow_exception(m_error);
  } catch (const Stopped&) {
  } catch (const BrokenPromise&) {
  } catch (const std::exception& error) {
    log_error(std::string("a Future failed and nobody consumed it: ") + error.what());
  } catch (...) {
    log_error("a Future failed with an exception of unknown type and nobody consumed it");
  }
}

void Detached::promise_type::unhandled_exception() noexcept {
  try {
    throw;
  } catch (const std::exception& error) {
    log_error(std::string("uncaught exception in a background coroutine: ") + error.what());
  } catch (...) {
    log_error("uncaught exception of unknown type in a background coroutine");
  }
}

class RuntimeImpl {
 public:
  RuntimeImpl() {
    the_registry().open();
    the_loop().start();
  }
  ~RuntimeImpl() {
    the_registry().stop_all();
    the_loop().stop();
  }
  std::vector<std::string> flags;
  std::vector<std::string> arguments;
};

}  // namespace scale::detail

namespace scale {

Runtime::Runtime() : m_impl(std::make_unique<detail::RuntimeImpl>()) {
  // A worker whose main built Runtime() without argc/argv still must not run the program as a
  // parent would (it would spawn workers of its own): find the flag on the command line.
  if (std::getenv(detail::link_fd_env) == nullptr) return;
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  for (std::string arg; std::getline(cmdline, arg, '\0');)
    if (arg == detail::worker_flag) {
      if (auto link = detail::child_link()) detail::serve_as_worker(*link);
    }
}

Runtime::Runtime(int& argc, char** argv) : Runtime() {
  // Flags that take their value as the next argument when not written as --flag=value.
  static constexpr const char* with_value[] = {detail::cluster_worker_flag, detail::heartbeat_flag, "--scale-link"};
  int kept = 0;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i] ? argv[i] : "";
    m_impl->arguments.push_back(arg);
    if (i > 0 && arg.rfind("--scale-", 0) == 0) {
      m_impl->flags.push_back(arg);
      bool takes_value = std::any_of(std::begin(with_value), std::end(with_value),
                                     [&](const char* name) { return arg == name; });
      if (takes_value && i + 1 < argc) {
        m_impl->flags.push_back(argv[++i]);
        m_impl->arguments.push_back(argv[i]);
      }
      continue;
    }
    argv[kept++] = argv[i];
  }
  for (int i = kept; i < argc; ++i) argv[i] = nullptr;
  argc = kept;
  detail::set_program_arguments(m_impl->arguments);
  // A worker started with --scale-worker URL joins a ClusterManager's workers and never returns.
  std::string cluster_url;
  bool cluster_worker = false;
  int heartbeat_ms = 1000;
  const std::string cluster_prefix = std::string(detail::cluster_worker_flag) + "=";
  const std::string heartbeat_prefix = std::string(detail::heartbeat_flag) + "=";
  auto& flags = m_impl->flags;
  for (std::size_t i = 0; i < flags.size(); ++i) {
    const std::string& flag = flags[i];
    std::string value;
    bool has_value = false;
    if (flag == detail::cluster_worker_flag || flag == detail::heartbeat_flag) {
      has_value = i + 1 < flags.size();
      if (has_value) value = flags[i + 1];
    } else if (flag.starts_with(cluster_prefix)) {
      value = flag.substr(cluster_prefix.size());
      has_value = true;
    } else if (flag.starts_with(heartbeat_prefix)) {
      value = flag.substr(heartbeat_prefix.size());
      has_value = true;
    } else {
      continue;
    }
    const bool is_cluster = flag.starts_with(detail::cluster_worker_flag) && !flag.starts_with(detail::worker_flag);
    if (!has_value || value.empty())
      throw Error(std::string(is_cluster ? detail::cluster_worker_flag : detail::heartbeat_flag) +
                  (is_cluster ? " needs a URL: --scale-worker redis://host:port"
                              : " needs a number of milliseconds: --scale-heartbeat-ms 1000"));
    if (is_cluster) {
      cluster_worker = true;
      cluster_url = value;
    } else {
      char* end = nullptr;
      const long parsed = std::strtol(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || parsed < 10 || parsed > 3'600'000)
        throw Error(std::string(detail::heartbeat_flag) + " takes milliseconds from 10 to 3600000, not '" + value +
                    "'");
      heartbeat_ms = static_cast<int>(parsed);
    }
    if (flag == detail::cluster_worker_flag || flag == detail::heartbeat_flag) ++i;
  }
  if (cluster_worker) detail::serve_cluster_worker(cluster_url, heartbeat_ms);
  // A worker started by a ProcessPoolManager serves its parent and never returns.
  if (std::find(m_impl->flags.begin(), m_impl->flags.end(), detail::worker_flag) != m_impl->flags.end()) {
    if (auto link = detail::child_link()) detail::serve_as_worker(*link);
    detail::log_error(std::string(detail::worker_flag) +
                      " given, but this process was not started by a ProcessPoolManager; running normally");
  }
}

Runtime::~Runtime() = default;

void Runtime::post_to_loop(detail::UniqueFunction fn) { detail::post(std::move(fn)); }

const std::vector<std::string>& Runtime::scale_flags() const noexcept { return m_impl->flags; }
const std::vector<std::string>& Runtime::original_arguments() const noexcept { return m_impl->arguments; }

}  // namespace scale
