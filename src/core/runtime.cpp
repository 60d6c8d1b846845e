// The loop thread, the shutdown registry, and Runtime's life cycle.

#include <scale/runtime.hpp>

#include "cluster/worker.hpp"
#include "core/application_stop.hpp"
#include "process/program_arguments.hpp"
#include "process/worker_link.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>
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

  bool running() const noexcept { return m_running.load(std::memory_order_acquire); }

  void post(LoopItem item) {
    std::unique_lock lock(m_mutex);
    if (!m_running) {
      lock.unlock();
      item.run();
      return;
    }
    m_queue.push_back(std::move(item));
    const bool wake = std::exchange(m_waiting, false);
    lock.unlock();
    if (wake) m_cv.notify_one();
  }

  bool post_at(std::chrono::steady_clock::time_point when, UniqueFunction fn) {
    std::unique_lock lock(m_mutex);
    if (!m_running || m_quitting) return false;
    m_timers.push_back(Timer{when, m_sequence++, std::move(fn)});
    std::push_heap(m_timers.begin(), m_timers.end(), TimerLater{});
    const bool wake = std::exchange(m_waiting, false);
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
  std::atomic<bool> m_running{false};  // written under m_mutex; read without it by running()
  bool m_quitting = false;
  // NOTE: the first post to a waiting loop takes this and wakes it; the posts after it, before
  // the loop has run, find it false and leave the condition variable alone (no futex wake each).
  // The loop looks at its queue under the lock before it waits again, so none is missed.
  bool m_waiting = false;
  std::thread m_thread;
};

Loop& the_loop() {
  static Loop* loop = new Loop();  // never destroyed; see the NOTE on Loop
  return *loop;
}

// NOTE: pending Promises' states whose consumers wait on them, in kShards intrusive lists chosen
// by address, each under its own mutex: making and completing Promises on many threads do not
// meet on one lock, and tracking allocates nothing. A Promise completed before its consumer
// waits (set_value, then co_await) is never tracked and takes no lock. A tracked state holds a
// reference to itself (RegistryLink::self) until it is untracked, so that stop_all can fail it
// while its Promise is being destroyed elsewhere; the reference is dropped after the shard's
// lock is released. Each shutdown starts a new generation; a Promise's state made in an earlier
// one and never tracked fails with Stopped when next waited on, completed or polled.
class Registry {
 public:
  void open() { m_stopping.store(false, std::memory_order_release); }

  void prepare(StateBase& state) noexcept {
    // The generation first: a shutdown that begins after this load is seen by stopped_since_made.
    state.m_registry.generation = m_generation.load(std::memory_order_acquire);
    state.m_registry.when_waited = true;
    if (m_stopping.load(std::memory_order_acquire)) state.fail(std::make_exception_ptr(Stopped()));
  }

  bool stopped_since_made(const StateBase& state) const noexcept {
    return state.m_registry.generation != m_generation.load(std::memory_order_acquire);
  }

  void track(const std::shared_ptr<StateBase>& state) noexcept {
    std::shared_ptr<StateBase> completed;  // tracked after it completed: dropped after the lock
    {
      Shard& shard = shard_of(state.get());
      std::lock_guard lock(shard.mutex);
      RegistryLink& link = state->m_registry;
      if (link.tracked.load(std::memory_order_relaxed)) return;
      if (!m_stopping.load(std::memory_order_acquire) && !stopped_since_made(*state)) {
        link.self = state;
        link.previous = nullptr;
        link.next = shard.head;
        if (shard.head != nullptr) shard.head->m_registry.previous = state.get();
        shard.head = state.get();
        link.tracked.store(true, std::memory_order_seq_cst);
        // A producer that completed before it could see `tracked` does not untrack it (see the
        // NOTE on StateBase::finish): untrack it here.
        if (state->is_ready_seq_cst()) completed = unlink(shard, state.get());
        return;
      }
    }
    state->fail(std::make_exception_ptr(Stopped()));
  }

  void untrack(StateBase* state) noexcept {
    std::shared_ptr<StateBase> self;
    {
      Shard& shard = shard_of(state);
      std::lock_guard lock(shard.mutex);
      if (!state->m_registry.tracked.load(std::memory_order_relaxed)) return;
      self = unlink(shard, state);
    }
  }

  /// Fails every pending state with Stopped; states tracked from now on fail at once.
  void stop_all() {
    m_stopping.store(true, std::memory_order_release);
    m_generation.fetch_add(1, std::memory_order_acq_rel);
    std::vector<std::shared_ptr<StateBase>> states;
    for (Shard& shard : m_shards) {
      std::lock_guard lock(shard.mutex);
      while (shard.head != nullptr) states.push_back(unlink(shard, shard.head));
    }
    auto stopped = std::make_exception_ptr(Stopped());
    for (auto& state : states) state->fail(stopped);
  }

 private:
  static constexpr std::size_t kShards = 16;
  struct alignas(64) Shard {
    std::mutex mutex;
    StateBase* head = nullptr;
  };

  Shard& shard_of(const StateBase* state) noexcept {
    return m_shards[(reinterpret_cast<std::uintptr_t>(state) >> 6) % kShards];
  }

  /// Under the shard's lock: takes `state` out of its list and returns its reference to itself.
  static std::shared_ptr<StateBase> unlink(Shard& shard, StateBase* state) noexcept {
    RegistryLink& link = state->m_registry;
    if (link.previous != nullptr)
      link.previous->m_registry.next = link.next;
    else
      shard.head = link.next;
    if (link.next != nullptr) link.next->m_registry.previous = link.previous;
    link.previous = link.next = nullptr;
    link.tracked.store(false, std::memory_order_release);
    return std::move(link.self);
  }

  std::array<Shard, kShards> m_shards;
  std::atomic<bool> m_stopping{false};
  std::atomic<std::uint64_t> m_generation{0};
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
void prepare_tracking(StateBase& state) noexcept { the_registry().prepare(state); }
void track_waited(const std::shared_ptr<StateBase>& state) noexcept { the_registry().track(state); }
bool stopped_since_made(const StateBase& state) noexcept { return the_registry().stopped_since_made(state); }
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

namespace {

/// A --scale-* flag the Runtime knows; every other --scale-* argument is refused.
struct RuntimeFlag {
  enum class Kind {
    worker_link,
    cluster_worker,
    heartbeat,
    worker_threads,
    worker_processes,
    worker_provides,
    worker_site
  } kind;
  std::string_view name;
  std::string_view value;    // what its value is ("a URL"), or empty when it takes none
  std::string_view example;  // how it is written
};

constexpr RuntimeFlag runtime_flags[] = {
    {RuntimeFlag::Kind::cluster_worker, cluster_worker_flag, "a URL", "--scale-worker redis://host:port"},
    {RuntimeFlag::Kind::heartbeat, heartbeat_flag, "a number of milliseconds", "--scale-heartbeat-ms 1000"},
    {RuntimeFlag::Kind::worker_threads, worker_threads_flag, "a number of threads", "--scale-threads 4"},
    {RuntimeFlag::Kind::worker_processes, worker_processes_flag, "a number of processes", "--scale-processes 4"},
    {RuntimeFlag::Kind::worker_provides, worker_provides_flag, "name=value entries", "--scale-provides gpu=2,site=eu-1"},
    {RuntimeFlag::Kind::worker_site, worker_site_flag, "a site name", "--scale-site eu-1"},
    {RuntimeFlag::Kind::worker_link, worker_flag, "", "--scale-worker-link (a ProcessPoolManager adds it)"},
};

constexpr std::string_view runtime_flag_prefix = "--scale-";

/// The flag named exactly `name`, or null.
const RuntimeFlag* find_runtime_flag(std::string_view name) {
  for (const RuntimeFlag& flag : runtime_flags)
    if (flag.name == name) return &flag;
  return nullptr;
}

std::string known_runtime_flags() {
  std::string out;
  for (const RuntimeFlag& flag : runtime_flags) {
    if (!out.empty()) out += ", ";
    out += flag.example;
  }
  return out;
}

/// What the Runtime found among the arguments.
struct RuntimeFlags {
  std::vector<bool> taken;         // by argv index: a flag of ours or its value
  std::vector<std::string> given;  // those arguments, as written
  bool worker_link = false;
  std::optional<std::string> cluster_url;
  int heartbeat_ms = 1000;
  // As written; checked by the cluster worker.
  std::optional<std::string> worker_threads, worker_processes, worker_provides, worker_site;
};

/// Every --scale-* argument of argv[1..argc), matched by exact name, as `--flag value` or
/// `--flag=value`; throws scale::Error for an unknown flag, a missing value or a bad one.
RuntimeFlags parse_runtime_flags(int argc, const char* const* argv) {
  RuntimeFlags flags;
  flags.taken.assign(static_cast<std::size_t>(std::max(argc, 0)), false);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i] ? argv[i] : "";
    if (!arg.starts_with(runtime_flag_prefix)) continue;
    const std::size_t equals = arg.find('=');
    const std::string_view name = arg.substr(0, equals);
    const RuntimeFlag* flag = find_runtime_flag(name);
    if (flag == nullptr)
      throw Error("scale::Runtime: unknown flag '" + std::string(name) + "'; the --scale-* flags are " +
                  known_runtime_flags() +
                  " (the Runtime takes every --scale-* argument out of argv, so a flag of the program itself "
                  "needs another name)");
    flags.taken[static_cast<std::size_t>(i)] = true;
    flags.given.emplace_back(arg);
    std::optional<std::string> value;
    if (equals != std::string_view::npos) {
      if (flag->value.empty())
        throw Error("scale::Runtime: " + std::string(name) + " takes no value, not '" +
                    std::string(arg.substr(equals + 1)) + "'");
      value = std::string(arg.substr(equals + 1));
    } else if (!flag->value.empty() && i + 1 < argc && argv[i + 1] &&
               !std::string_view(argv[i + 1]).starts_with(runtime_flag_prefix)) {
      // `--flag value`: the value is the next argument, unless that is another flag of ours.
      value = argv[++i];
      flags.taken[static_cast<std::size_t>(i)] = true;
      flags.given.push_back(*value);
    }
    if (!flag->value.empty() && (!value || value->empty()))
      throw Error(std::string(name) + " needs " + std::string(flag->value) + ": " + std::string(flag->example));
    switch (flag->kind) {
      case RuntimeFlag::Kind::worker_link:
        flags.worker_link = true;
        break;
      case RuntimeFlag::Kind::cluster_worker:
        flags.cluster_url = *value;
        break;
      case RuntimeFlag::Kind::heartbeat: {
        char* end = nullptr;
        const long parsed = std::strtol(value->c_str(), &end, 10);
        if (end == value->c_str() || *end != '\0' || parsed < 10 || parsed > 3'600'000)
          throw Error(std::string(name) + " takes milliseconds from 10 to 3600000, not '" + *value + "'");
        flags.heartbeat_ms = static_cast<int>(parsed);
        break;
      }
      case RuntimeFlag::Kind::worker_threads:
        flags.worker_threads = *value;
        break;
      case RuntimeFlag::Kind::worker_processes:
        flags.worker_processes = *value;
        break;
      case RuntimeFlag::Kind::worker_provides:
        flags.worker_provides = *value;
        break;
      case RuntimeFlag::Kind::worker_site:
        flags.worker_site = *value;
        break;
    }
  }
  return flags;
}

}  // namespace

class RuntimeImpl {
 public:
  RuntimeImpl() {
    the_registry().open();
    the_loop().start();
  }
  ~RuntimeImpl() {
    signals.reset();  // no stop request may reach a loop that is going
    the_registry().stop_all();
    the_loop().stop();
  }
  std::vector<std::string> flags;
  std::vector<std::string> arguments;
  std::optional<SignalHandling> signals;  // last member: removed first
};

}  // namespace scale::detail

namespace scale {

Runtime::Runtime() : Runtime(RuntimeOptions{}) {}

Runtime::Runtime(RuntimeOptions options) : m_impl(std::make_unique<detail::RuntimeImpl>()) {
  detail::reset_application_stop();
  // A worker whose main built Runtime() without argc/argv still must not run the program as a
  // parent would (it would spawn workers of its own): find the flag on the command line.
  if (std::getenv(detail::link_fd_env) != nullptr) {
    std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
    for (std::string arg; std::getline(cmdline, arg, '\0');)
      if (arg == detail::worker_flag) {
        if (auto link = detail::child_link()) detail::serve_as_worker(*link);
      }
  }
  // NOTE: installed only once this is certainly no process-pool worker (serve_as_worker never
  // returns); a cluster worker started with --scale-worker never returns either (below).
  if (options.handle_signals) m_impl->signals.emplace();
}

Runtime::Runtime(int& argc, char** argv, RuntimeOptions options) : Runtime(RuntimeOptions{.handle_signals = false}) {
  // Read and checked before argv changes: a refused flag leaves the command line as it was.
  detail::RuntimeFlags flags = detail::parse_runtime_flags(argc, argv);
  int kept = 0;
  for (int i = 0; i < argc; ++i) {
    m_impl->arguments.push_back(argv[i] ? argv[i] : "");
    if (i == 0 || !flags.taken[static_cast<std::size_t>(i)]) argv[kept++] = argv[i];
  }
  for (int i = kept; i < argc; ++i) argv[i] = nullptr;
  argc = kept;
  m_impl->flags = std::move(flags.given);
  detail::set_program_arguments(m_impl->arguments);
  // A worker started with --scale-worker URL joins a ClusterManager's workers and never returns.
  if (flags.cluster_url || flags.worker_threads || flags.worker_processes || flags.worker_provides ||
      flags.worker_site) {
    // A bad --scale-threads / --scale-processes / --scale-provides exits 2 here, with or without
    // --scale-worker.
    detail::ClusterWorkerOptions worker = detail::cluster_worker_options(
        {.url = flags.cluster_url.value_or(""),
         .heartbeat_ms = flags.heartbeat_ms,
         .threads = flags.worker_threads,
         .processes = flags.worker_processes,
         .provides = flags.worker_provides,
         .site = flags.worker_site});
    if (flags.cluster_url) detail::serve_cluster_worker(worker);
    detail::log_error(
        "--scale-threads, --scale-processes, --scale-provides and --scale-site apply to a cluster worker "
        "(--scale-worker URL); ignored");
  }
  // A worker started by a ProcessPoolManager serves its parent and never returns.
  if (flags.worker_link) {
    if (auto link = detail::child_link()) detail::serve_as_worker(*link);
    detail::log_error(std::string(detail::worker_flag) +
                      " given, but this process was not started by a ProcessPoolManager; running normally");
  }
  if (options.handle_signals) m_impl->signals.emplace();
}

void Runtime::request_stop() { detail::request_application_stop(); }
bool Runtime::stop_requested() const noexcept { return detail::application_stop_requested(); }

Runtime::~Runtime() = default;

void Runtime::post_to_loop(detail::UniqueFunction fn) { detail::post(std::move(fn)); }

const std::vector<std::string>& Runtime::scale_flags() const noexcept { return m_impl->flags; }
const std::vector<std::string>& Runtime::original_arguments() const noexcept { return m_impl->arguments; }

}  // namespace scale
