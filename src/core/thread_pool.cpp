// ThreadPoolManager: one queue of chunks, a set of threads that resize() and adapt() change while
// calls run, Promise-based completion, and help while waiting for nested calls.
//
// Why it looks like this:
//   - The thread count has one target (m_target, under m_mutex). Growth starts threads at once;
//     a shrink only lowers the target, and a thread retires when it is between chunks and the
//     pool has more threads able to run chunks than it needs: more than the target, or than one
//     while chunks are still queued (so chunks queued before a resize(0) still run and never hang). A retired
//     thread hands its std::thread to the control thread, which joins it; none is detached.
//   - adapt() runs detail::ScalingController on a small control thread that sleeps on a
//     condition variable until the backlog changes (backlog_changed() only sets a flag and wakes
//     it) or until the controller's next_deadline() (the end of a scale-up or scale-down window),
//     so a window that ends with no new event is still acted on. A thread of its own rather than
//     a timer on the loop: it works whether or not a Runtime is running, needs no way to cancel a
//     stale timer, and cannot outlive the pool (the destructor joins it).
//   - A thread that waits on a Future runs the queued chunks nested in its own (see
//     help_while_waiting.hpp and wait_for below); when every thread waits and none may run what
//     is queued, one more thread starts after a short delay and retires once idle.
//   - Routing: the pool is one worker that offers ThreadPoolOptions::provides as a whole (its
//     threads share the machine's two GPUs, gpu=2, rather than each having them). A chunk whose
//     call needs amounts (RunOptions::resources) takes them from m_ledger when a thread takes it
//     and gives them back when it ends; the queue keeps such chunks in one FIFO per class
//     (routed_queue.hpp), so a chunk that must wait for an amount never holds up a chunk behind it.
//     A call the pool can never meet fails at submit with Unsatisfiable. With no requirement a
//     chunk costs one more branch at submit, at take and at its end, nothing per item.
//   - NOTE: a chunk nested in one that holds amounts (a map made inside a chunk, on this pool) may
//     need what its outer chunk holds while that chunk waits for it in get(). A waiting thread
//     runs such a nested chunk under the amounts its own chunks hold (t_held) when the ledger has
//     too little free: the outer chunk is blocked beneath it on the same stack, so the two never
//     use the amount at once, and the nested call completes instead of waiting for ever on its
//     own outer chunk. Only the holding thread lends, only to chunks nested in its own, exactly
//     the chunks it runs while it waits anyway. A nested call made outside any pool chunk (on the
//     loop, after a co_await) cannot be told from an unrelated call: it waits like one (see
//     docs/routing.md).
//   - Workers by slot: each thread has a slot ("thread-<k>", the lowest free k when it starts).
//     A keyed chunk (Iterator::keyed_by) goes to the queue of the slot that rendezvous hashing
//     picks among the live slots, and a pinned one (broadcast: Chunk::worker) to its slot's; a
//     thread takes from its own slot's queue first, then from the shared one. A slot whose thread
//     retires hands its keyed chunks to their next choice and fails its pinned ones (NoWorkers).
//     NOTE: a thread waiting for a nested call also runs nested keyed chunks queued for other
//     slots, and an idle thread runs keyed chunks queued for a slot whose thread sleeps in such a
//     wait (they may be what it waits for): affinity gives way rather than a wait never ending.
//   - Setups (on_every_worker) run on a thread before its next chunk after they were added. A
//     thread whose setup throws takes no more chunks and retires (its slot is not used again);
//     when no thread is left to run chunks, every queued chunk and every later submit fails with
//     that exception, until resize or adapt starts threads that run the setups again.
//   - Lock order: m_control_mutex, then the ScalabilityManager's call registry (backlog()), then
//     m_mutex; a Future's state lock, then m_mutex (its waker). No Promise is completed and no
//     Entry destroyed while m_mutex is held.

#include <scale/managers/thread_pool.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/help_while_waiting.hpp"
#include "core/rendezvous.hpp"
#include "core/resource_ledger.hpp"
#include "core/routed_queue.hpp"
#include "core/scaling_controller.hpp"
#include "core/worker_slot_id.hpp"

namespace scale::detail {

namespace {
std::size_t hardware_threads() noexcept { return std::max(1u, std::thread::hardware_concurrency()); }

const Resources& resources_of(const Chunk& chunk) noexcept { return chunk.job->policy().requirement.resources; }

/// What the chunks running on this thread hold, innermost first (see the NOTE on lending above).
struct HeldFrame {
  const void* pool;
  const Resources* resources;
  const HeldFrame* outer;
};
thread_local const HeldFrame* t_held = nullptr;
/// The slot of this pool thread (pool threads only; one pool per thread).
thread_local std::size_t t_slot = static_cast<std::size_t>(-1);

constexpr std::string_view slot_prefix = "thread-";
std::string slot_id(std::size_t slot) { return detail::slot_id(slot_prefix, slot); }
}  // namespace

class ThreadPool final : public WaitHelper {
 public:
  /// `owner` supplies backlog(); `grown` tells its running calls that concurrency rose.
  ThreadPool(std::size_t threads, ThreadPoolOptions options, const ScalabilityManager& owner,
             std::function<void()> grown)
      : m_owner(owner), m_grown(std::move(grown)), m_ledger(std::move(options.provides), "ThreadPoolOptions::provides") {
    if (threads == 0) threads = hardware_threads();
    std::lock_guard lock(m_mutex);
    set_target_locked(threads);
  }

  ~ThreadPool() {
    {
      std::lock_guard lock(m_control_mutex);
      m_control_stop = true;
    }
    m_control_cv.notify_all();
    if (m_control.joinable()) m_control.join();

    std::vector<Entry> abandoned;
    {
      std::lock_guard lock(m_mutex);
      m_stopping = true;
      abandoned = m_queue.take_all();
    }
    m_cv.notify_all();
    m_counters.queued -= abandoned.size();
    m_counters.failed += abandoned.size();
    auto stopped = std::make_exception_ptr(Stopped());
    for (auto& entry : abandoned) entry.promise.set_exception(stopped);
    abandoned.clear();
    // Threads finish the chunk they are running (its Promise completes normally), then exit. Once
    // m_stopping is set no thread retires, so neither list changes any more.
    for (auto& thread : m_threads) thread.join();
    for (auto& thread : m_exited) thread.join();
  }

  Future<void> submit(Chunk chunk) {
    Promise<void> promise;
    Future<void> future = promise.get_future();
    std::exception_ptr refused;
    bool adapting = false;
    bool for_one_slot = false;
    // The ledger's provides never change on a pool: read without the lock.
    const Requirement& requirement = chunk.job->policy().requirement;
    const bool can_meet = requirement.empty() || m_ledger.can_meet(requirement);
    {
      std::lock_guard lock(m_mutex);
      if (m_stopping) {
        refused = std::make_exception_ptr(Stopped());
      } else if (!can_meet) {
        refused = std::make_exception_ptr(Unsatisfiable(unsatisfiable_message(requirement, {{"thread-pool", m_ledger.provides()}})));
      } else if (m_target == 0 && !m_adapting) {
        refused = std::make_exception_ptr(NoWorkers(
            "scale::ThreadPoolManager has no threads (it was resized to 0 and adapt is off), so nothing can run this "
            "call; call resize(n) with n > 0, or adapt(policy) to start threads as work arrives"));
      } else if (m_setup_error && m_usable.empty()) {
        refused = m_setup_error;
      } else if (std::optional<std::size_t> slot = slot_for_locked(chunk, refused); refused) {
      } else {
        const Job& job = *chunk.job;
        queue_for_locked(slot).push_back(Entry{std::move(chunk), std::move(promise)}, requirement.resources);
        ++m_counters.queued;
        for_one_slot = slot.has_value();
        // Waiting threads sleep on their own condition variables: wake those that may run this
        // chunk, and, when every thread waits, one of them to watch for starvation.
        bool woken = false;
        for (Sleeper* sleeper : m_sleepers)
          if (sleeper->frame != nullptr && nested_in(job, sleeper->frame)) {
            sleeper->cv.notify_one();
            woken = true;
          }
        if (!woken && !m_sleepers.empty() && m_sleepers.size() == m_alive) m_sleepers.front()->cv.notify_one();
        adapting = m_adapting;
      }
    }
    if (refused) {
      ++m_counters.failed;
      promise.set_exception(std::move(refused));
      return future;
    }
    // An idle thread, if any; a chunk for one slot must reach that slot's thread.
    if (for_one_slot)
      m_cv.notify_all();
    else
      m_cv.notify_one();
    // The queue counts in the backlog too (a chunk submitted outside any dispatch).
    if (adapting) backlog_changed();
    return future;
  }

  std::size_t target() const noexcept { return m_counters.workers_target.load(std::memory_order_relaxed); }
  ManagerStats stats() const noexcept { return m_counters.snapshot(); }

  void resize(std::size_t threads) {
    std::lock_guard control(m_control_mutex);
    start_control_locked();
    m_controller.reset();
    set_target(threads, false);
  }

  void adapt(ScalingPolicy policy) {
    // Validates (std::invalid_argument) before anything changes.
    ScalingController controller(policy, policy.max != 0 ? policy.max : hardware_threads());
    {
      std::lock_guard control(m_control_mutex);
      start_control_locked();
      m_controller.emplace(std::move(controller));
      {
        std::lock_guard lock(m_mutex);
        m_adapting = true;
      }
      m_adapting_flag.store(true, std::memory_order_relaxed);
      m_backlog_dirty.store(true, std::memory_order_relaxed);
    }
    m_control_cv.notify_all();
  }

  /// Any thread, often the loop: sets a flag and wakes the control thread, once per evaluation.
  void backlog_changed() noexcept {
    if (!m_adapting_flag.load(std::memory_order_relaxed)) return;
    if (m_backlog_dirty.exchange(true, std::memory_order_acq_rel)) return;
    // NOTE: the flag is set before the lock is taken, and the control thread clears it under the
    // lock before it reads the backlog; so either it sees the flag or it is waiting and is woken.
    { std::lock_guard control(m_control_mutex); }
    m_control_cv.notify_all();
  }

  /// A call was stopped: chunks of it that wait for amounts held by other calls fail now
  /// (Cancelled) rather than when the amounts come free. Any other queued chunk of it is skipped
  /// as soon as a thread comes by, as before routing; with no chunk waiting for amounts this does
  /// nothing.
  void stop(const std::shared_ptr<Job>& job) {
    std::vector<Entry> withdrawn;
    {
      std::lock_guard lock(m_mutex);
      auto of_job = [&](const Entry& entry) { return entry.chunk.job == job; };
      if (m_queue.has_classes()) withdrawn = m_queue.take_all_if(of_job);
      for (Slot& slot : m_slots)
        for (Entry& entry : slot.queue.take_all_if(of_job)) withdrawn.push_back(std::move(entry));
    }
    m_counters.queued -= withdrawn.size();
    m_counters.failed += withdrawn.size();
    const auto cancelled = std::make_exception_ptr(Cancelled(cancelled_message()));
    for (auto& entry : withdrawn) {
      entry.chunk = Chunk{};
      entry.promise.set_exception(cancelled);
    }
  }

  /// Future::get() on one of this pool's threads (t_wait_helper): runs queued chunks nested in the
  /// chunk this thread runs until `state` completes, and sleeps when there are none.
  ///
  /// NOTE: when every thread of the pool waits here with nothing it may run while chunks are
  /// queued (a nested call made on the loop rather than in a pool chunk, or two pools whose
  /// threads each wait on a call queued on the other), nobody would ever run them. After
  /// kStarvedFor of that, the waiting thread starts one more thread, above the target; it runs
  /// queued chunks from the front like any idle thread and retires once idle (as ForkJoinPool
  /// compensates a blocked worker). The delay keeps the short gaps between a nested call's
  /// chunks (a hop through the loop) from starting threads.
  void wait_for(StateBase& state) override {
    const NestingFrame* frame = innermost_nesting_frame();  // null: nothing can be nested in it
    Sleeper sleeper(frame);
    struct Waker final : StateWaker {
      Waker(ThreadPool& pool, Sleeper& sleeper) : pool(pool), sleeper(sleeper) {}
      // NOTE: on the completing thread, once is_ready() is true and before clear_waker() can
      // return. Taking m_mutex orders this after the waiting thread's check of is_ready() (under
      // m_mutex) or after it went to sleep.
      void state_completed() noexcept override {
        { std::lock_guard lock(pool.m_mutex); }
        sleeper.cv.notify_one();
      }
      ThreadPool& pool;
      Sleeper& sleeper;
    } waker(*this, sleeper);
    if (!state.set_waker(&waker)) return;  // already complete
    {
      std::unique_lock lock(m_mutex);
      while (!state.is_ready()) {
        std::optional<Entry> nested;
        if (frame != nullptr && !m_stopping) {
          auto may_run = [&](const Resources& resources, const Entry& entry) {
            if (!nested_in(*entry.chunk.job, frame)) return false;
            return resources.empty() || entry.chunk.job->cancelled() || m_ledger.fits(resources) || lent_here(resources);
          };
          if (t_slot < m_slots.size()) nested = m_slots[t_slot].queue.take_first(may_run);
          if (!nested) nested = m_queue.take_first(may_run);
          for (std::size_t k = 0; !nested && k < m_slots.size(); ++k)
            nested = m_slots[k].queue.take_first([&](const Resources& resources, const Entry& entry) {
              return entry.chunk.worker.empty() && may_run(resources, entry);  // keyed, not pinned
            });
        }
        if (nested) {
          hold_locked(*nested);  // too little free: it runs under what this thread's chunks hold
          run_taken(lock, std::move(*nested));
          continue;
        }
        m_sleepers.push_back(&sleeper);
        if (t_slot < m_slots.size()) {
          m_slots[t_slot].waiting = true;
          if (!m_slots[t_slot].queue.empty()) m_cv.notify_all();  // an idle thread may run them now
        }
        if (starving_locked()) {
          const bool timed_out = sleeper.cv.wait_for(lock, kStarvedFor) == std::cv_status::timeout;
          if (timed_out && !state.is_ready() && starving_locked()) {
            try {
              add_thread_locked();
            } catch (const std::exception& error) {
              log_error(std::string("scale::ThreadPoolManager could not start a thread: ") + error.what());
            }
          }
        } else {
          sleeper.cv.wait(lock);
        }
        std::erase(m_sleepers, &sleeper);
        if (t_slot < m_slots.size()) m_slots[t_slot].waiting = false;
      }
      // Awake again: a thread started while this one slept may now be one too many.
      if (m_alive > m_target) m_cv.notify_all();
    }
    state.clear_waker();
  }

 private:
  struct Entry {
    Chunk chunk;
    Promise<void> promise;
    bool holds = false;  // took resources_of(chunk) from m_ledger; gives them back when it ends
  };

  /// A thread's slot: its id is slot_id(index); its queue holds the chunks keyed or pinned to it.
  struct Slot {
    bool alive = false;         // a thread runs in it
    bool failed = false;        // its thread's setup threw: never used again
    bool waiting = false;       // its thread sleeps in wait_for
    std::size_t setups_run = 0; // of m_setups, by its thread
    RoutedQueue<Entry> queue;
  };

  /// Under m_mutex: the slot a chunk must go to (none: the shared queue), or `refused` set.
  std::optional<std::size_t> slot_for_locked(const Chunk& chunk, std::exception_ptr& refused) {
    if (!chunk.worker.empty()) {
      const std::optional<std::size_t> slot = slot_of(slot_prefix, chunk.worker);
      if (slot && *slot < m_slots.size() && m_slots[*slot].alive && !m_slots[*slot].failed) return slot;
      refused = std::make_exception_ptr(
          NoWorkers("scale::ThreadPoolManager has no live thread \"" + chunk.worker + "\" (it retired, or its setup failed)"));
      return std::nullopt;
    }
    if (!chunk.keyed() || m_usable.empty()) return std::nullopt;
    return key_slot_locked(chunk.key);
  }

  /// Under m_mutex, with a usable slot: the slot a key goes to (rendezvous over the usable slots).
  std::size_t key_slot_locked(std::string_view key) const { return m_usable[rendezvous_pick(key, m_usable_ids)]; }

  RoutedQueue<Entry>& queue_for_locked(std::optional<std::size_t> slot) { return slot ? m_slots[*slot].queue : m_queue; }

  /// Under m_mutex: the live slots that run chunks changed.
  void slots_changed_locked() {
    m_usable.clear();
    m_usable_ids.clear();
    for (std::size_t k = 0; k < m_slots.size(); ++k)
      if (m_slots[k].alive && !m_slots[k].failed) {
        m_usable.push_back(k);
        m_usable_ids.push_back(slot_id(k));
      }
  }

  /// Under m_mutex: slot `slot` stops running chunks. Its keyed chunks go to their next choice;
  /// its pinned ones are returned, to fail (NoWorkers, or `error`) once the lock is released; with
  /// `error` and no usable slot left, every queued chunk is returned to fail with it.
  std::vector<Entry> leave_slot_locked(std::size_t slot, std::exception_ptr error) {
    m_slots[slot].alive = false;
    slots_changed_locked();
    std::vector<Entry> failed;
    for (Entry& entry : m_slots[slot].queue.take_all_if([](const Entry&) { return true; })) {
      if (!entry.chunk.worker.empty() || m_usable.empty()) {
        failed.push_back(std::move(entry));
        continue;
      }
      const std::size_t next = key_slot_locked(entry.chunk.key);
      const Resources& resources = resources_of(entry.chunk);
      m_slots[next].queue.push_back(std::move(entry), resources);
    }
    if (error && m_usable.empty()) {
      m_setup_error = error;
      for (Entry& entry : m_queue.take_all_if([](const Entry&) { return true; })) failed.push_back(std::move(entry));
    }
    m_counters.queued -= failed.size();
    return failed;
  }

  /// Fails entries taken out of the queues (m_mutex not held).
  void fail_entries(std::vector<Entry> entries, std::exception_ptr error) {
    if (entries.empty()) return;
    m_counters.failed += entries.size();
    for (Entry& entry : entries) {
      std::exception_ptr why = error;
      if (!why)
        why = std::make_exception_ptr(NoWorkers("scale::ThreadPoolManager: the thread \"" + entry.chunk.worker +
                                                "\" this chunk was for retired before it ran"));
      entry.chunk = Chunk{};
      entry.promise.set_exception(why);
    }
  }

 public:
  /// The live threads that run chunks, by id.
  std::vector<std::string> usable_ids() const {
    std::lock_guard lock(m_mutex);
    return m_usable_ids;
  }

  void add_setup(std::shared_ptr<Job> setup) {
    {
      std::lock_guard lock(m_mutex);
      m_setups.push_back(std::move(setup));
      m_setups_added.store(m_setups.size(), std::memory_order_release);
    }
  }

 private:
  /// A thread waiting in wait_for with nothing it may run, on its own condition variable so that
  /// a chunk wakes only the threads that may run it.
  struct Sleeper {
    explicit Sleeper(const NestingFrame* frame) noexcept : frame(frame) {}
    const NestingFrame* frame;
    std::condition_variable cv;
  };

  static constexpr std::chrono::milliseconds kStarvedFor{50};

  /// Under m_mutex: chunks that could start are queued and every live thread sleeps in wait_for.
  /// (A chunk waiting for amounts held by the sleepers' own chunks is no reason for a thread: it
  /// could not take them either.)
  bool starving_locked() const noexcept {
    return !m_stopping && startable_locked() && !m_sleepers.empty() && m_sleepers.size() >= m_alive;
  }

  /// Under m_mutex: some queued chunk could start now.
  bool startable_locked() const noexcept {
    for (const Slot& slot : m_slots)
      if (slot.waiting && !slot.queue.empty()) return true;  // keyed chunks another thread may take
    if (!m_queue.has_classes()) return !m_queue.empty();
    return m_queue.startable([&](const Resources& resources, std::size_t queued) {
             return m_ledger.room_for(resources, queued);
           }) > 0;
  }

  /// Under m_mutex: the next chunk an idle thread may start, oldest first; its amounts taken.
  std::optional<Entry> take_next_locked() {
    auto may_start = [&](const Resources& resources, const Entry& queued) {
      return queued.chunk.job->cancelled() || m_ledger.fits(resources);  // a cancelled one is only skipped
    };
    std::optional<Entry> entry;
    if (t_slot < m_slots.size() && !m_slots[t_slot].queue.empty()) entry = m_slots[t_slot].queue.take_next(may_start);
    if (!entry) entry = m_queue.take_next(may_start);
    // Keyed chunks of a slot whose thread sleeps in a wait: they may be what it waits for (a call
    // made on the loop), so another thread runs them rather than let the wait never end.
    for (std::size_t k = 0; !entry && k < m_slots.size(); ++k)
      if (k != t_slot && m_slots[k].waiting && !m_slots[k].queue.empty())
        entry = m_slots[k].queue.take_next([&](const Resources& resources, const Entry& queued) {
          return queued.chunk.worker.empty() && may_start(resources, queued);
        });
    if (entry) hold_locked(*entry);
    return entry;
  }

  /// Under m_mutex: takes a chunk's amounts for it, unless it needs none or its call was cancelled
  /// (it is skipped), or they do not fit (it runs under its outer chunk's: see lent_here).
  void hold_locked(Entry& entry) {
    const Resources& resources = resources_of(entry.chunk);
    if (!resources.empty() && !entry.chunk.job->cancelled()) entry.holds = m_ledger.take(resources);
  }

  /// Whether the chunks this thread is running for this pool hold at least `resources` between
  /// them (the NOTE on lending at the top of this file).
  bool lent_here(const Resources& resources) const noexcept {
    for (const auto& [name, asked] : resources) {
      double held = 0;
      for (const HeldFrame* at = t_held; at != nullptr; at = at->outer)
        if (at->pool == this)
          if (const auto found = at->resources->find(name); found != at->resources->end()) held += found->second;
      if (held < asked) return false;
    }
    return true;
  }

  /// Gives back what a chunk held and wakes the threads that might start a waiting chunk with it.
  void release(const Resources& resources) {
    bool waiting;
    {
      std::lock_guard lock(m_mutex);
      m_ledger.release(resources);
      waiting = m_queue.has_classes();
      if (waiting)
        for (Sleeper* sleeper : m_sleepers) sleeper->cv.notify_one();
    }
    if (waiting) m_cv.notify_all();
  }

  /// Under m_mutex: whether a thread between chunks should retire now: when more threads are
  /// able to run chunks (not asleep in wait_for) than the target, keeping one while chunks are
  /// queued. Threads asleep in a wait do not count, so a thread started for a starving wait stays
  /// while the others sleep.
  bool must_retire_locked() const noexcept {
    const std::size_t able = m_alive - m_sleepers.size();
    return !m_stopping && able > std::max<std::size_t>(m_target, m_queue.empty() ? 0 : 1);
  }

  void work(std::list<std::thread>::iterator self, std::size_t slot) {
    t_wait_helper = this;
    t_slot = slot;
    std::unique_lock lock(m_mutex);
    for (;;) {
      if (m_stopping) break;
      const bool failed = m_slots[slot].failed;
      if (failed || must_retire_locked()) {
        // Idle, and more threads than needed (or its setup threw): retire. The control thread
        // joins this one.
        --m_alive;
        m_counters.workers_alive.store(m_alive, std::memory_order_relaxed);
        m_exited.splice(m_exited.end(), m_threads, self);
        std::vector<Entry> orphans = leave_slot_locked(slot, failed ? m_slot_error : nullptr);
        // Leaving only waiting threads behind with chunks queued: one of them watches for it.
        if (starving_locked()) m_sleepers.front()->cv.notify_one();
        const std::exception_ptr error = failed && m_usable.empty() ? m_slot_error : nullptr;
        lock.unlock();
        fail_entries(std::move(orphans), error);
        {
          std::lock_guard control(m_control_mutex);
          start_control_locked();  // a thread started for a starving wait retires without any resize
          m_reap = true;
        }
        m_control_cv.notify_all();
        return;
      }
      if (std::optional<Entry> entry = take_next_locked()) {
        run_taken(lock, std::move(*entry));
        continue;
      }
      m_cv.wait(lock);  // woken by a submit, a release, a resize or the destructor
    }
    --m_alive;
    m_counters.workers_alive.store(m_alive, std::memory_order_relaxed);
    m_slots[slot].alive = false;
  }

  /// Runs an entry taken out of the queue with m_mutex released. The Entry goes before m_mutex is
  /// taken again.
  void run_taken(std::unique_lock<std::mutex>& lock, Entry taken) {
    if (m_slots[t_slot].setups_run != m_setups.size() && !run_setups(lock)) {
      // This thread's setup threw: the chunk goes back (to the next choice of its key, or failed
      // when it was pinned here), and the thread retires at its next look at the queue.
      if (taken.holds) m_ledger.release(resources_of(taken.chunk));
      taken.holds = false;
      if (taken.chunk.worker.empty() && !m_usable.empty()) {
        const std::optional<std::size_t> slot =
            taken.chunk.keyed() ? std::optional<std::size_t>(key_slot_locked(taken.chunk.key))
                                : std::nullopt;
        const Resources& resources = resources_of(taken.chunk);
        queue_for_locked(slot).push_front(std::move(taken), resources);
        lock.unlock();
        m_cv.notify_all();
        lock.lock();
        return;
      }
      // Pinned to this thread, or no thread is left that runs chunks: it fails with the setup's error.
      --m_counters.queued;
      std::vector<Entry> one;
      one.push_back(std::move(taken));
      const std::exception_ptr error = m_slot_error;
      lock.unlock();
      fail_entries(std::move(one), error);
      lock.lock();
      return;
    }
    {
      Entry entry = std::move(taken);
      --m_counters.queued;
      ++m_counters.running;
      lock.unlock();
      run(entry);
    }
    lock.lock();
  }

  /// Under `lock` (held on entry and return): runs on this thread the setups it has not run yet,
  /// with the lock released while each runs. False when one threw: the slot is marked failed.
  bool run_setups(std::unique_lock<std::mutex>& lock) {
    Slot& slot = m_slots[t_slot];
    while (slot.setups_run < m_setups.size()) {
      std::shared_ptr<Job> setup = m_setups[slot.setups_run];
      lock.unlock();
      std::exception_ptr error;
      try {
        setup->run(0, 1);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (error) {
        slot.failed = true;
        m_slot_error = error;
        ++m_counters.setups_failed;
        slots_changed_locked();
        return false;
      }
      ++slot.setups_run;
    }
    return true;
  }

  void run(Entry& entry) {
    std::exception_ptr error;
    {
      ChunkFrame frame(*entry.chunk.job);
      const HeldFrame held{this, &resources_of(entry.chunk), t_held};
      if (entry.holds) t_held = &held;
      try {
        run_chunk_blocking(entry.chunk);
      } catch (...) {
        error = std::current_exception();
      }
      t_held = held.outer;
    }
    if (entry.holds) release(resources_of(entry.chunk));
    if (!error) entry.chunk.job->ran_on(entry.chunk.begin, entry.chunk.end, slot_id(t_slot));
    // NOTE: the chunk (and with it possibly the last reference to the Job and the user's
    // function) is released here on the pool thread, after the counters but before the
    // Promise: once the awaiting algorithm resumes, no pool thread touches the Job.
    entry.chunk = Chunk{};
    --m_counters.running;
    if (error) {
      ++m_counters.failed;
      entry.promise.set_exception(std::move(error));
    } else {
      ++m_counters.done;
      entry.promise.set_value();
    }
  }

  /// Under m_mutex: moves the target to `threads`, starting threads at once when it grows.
  /// Returns whether the target rose.
  bool set_target_locked(std::size_t threads) {
    const bool rose = threads > m_target;
    m_target = threads;
    m_counters.workers_target.store(threads, std::memory_order_relaxed);
    while (m_alive < m_target) add_thread_locked();
    return rose;
  }

  /// Under m_mutex: starts one thread.
  void add_thread_locked() {
    // Started under m_mutex: the thread's first act is to take it, so its list node is set
    // before it can retire and move it.
    auto self = m_threads.emplace(m_threads.end());
    std::size_t slot = 0;
    while (slot < m_slots.size() && (m_slots[slot].alive || m_slots[slot].failed)) ++slot;
    if (slot == m_slots.size()) m_slots.emplace_back();
    try {
      *self = std::thread([this, self, slot] { work(self, slot); });
    } catch (...) {
      m_threads.erase(self);
      throw;
    }
    m_slots[slot].alive = true;
    m_slots[slot].setups_run = 0;
    slots_changed_locked();
    if (m_setup_error && !m_usable.empty()) m_setup_error = nullptr;  // a new thread tries the setups again
    ++m_alive;
    ++m_counters.workers_spawned;
    m_counters.workers_alive.store(m_alive, std::memory_order_relaxed);
  }

  /// Sets the target (and whether adapt is on), wakes idle threads so extra ones retire, and
  /// tells running calls when it rose. m_mutex is not held.
  void set_target(std::size_t threads, bool adapting) {
    bool rose;
    {
      std::lock_guard lock(m_mutex);
      if (m_stopping) return;
      m_adapting = adapting;
      m_adapting_flag.store(adapting, std::memory_order_relaxed);
      rose = set_target_locked(threads);
    }
    m_cv.notify_all();
    if (rose) m_grown();
  }

  /// Under m_control_mutex. Not once the destructor has stopped the control thread.
  void start_control_locked() {
    if (!m_control_stop && !m_control.joinable()) m_control = std::thread([this] { control(); });
  }

  void control() {
    std::unique_lock lock(m_control_mutex);
    while (!m_control_stop) {
      if (m_reap) {
        m_reap = false;
        std::list<std::thread> exited;
        {
          std::lock_guard pool(m_mutex);
          exited.swap(m_exited);
        }
        lock.unlock();
        for (auto& thread : exited) thread.join();  // each has left work(): the join is short
        lock.lock();
        continue;
      }
      if (!m_controller) {
        m_control_cv.wait(lock);
        continue;
      }
      const auto now = ScalingController::Clock::now();
      const auto deadline = m_controller->next_deadline();
      if (m_backlog_dirty.exchange(false, std::memory_order_acq_rel) || (deadline && now >= *deadline)) {
        std::size_t backlog = m_owner.backlog();
        std::size_t current;
        {
          std::lock_guard pool(m_mutex);
          backlog = std::max(backlog, m_queue.size());
          current = m_target;
        }
        const std::size_t next = m_controller->step(now, current, backlog);
        if (next != current) {
          try {
            set_target(next, true);
          } catch (const std::exception& error) {
            log_error(std::string("scale::ThreadPoolManager could not start a thread: ") + error.what());
          }
        }
        continue;  // re-read the deadline the step left
      }
      if (deadline)
        m_control_cv.wait_until(lock, *deadline);
      else
        m_control_cv.wait(lock);
    }
  }

  const ScalabilityManager& m_owner;
  std::function<void()> m_grown;
  ResourceLedger m_ledger;  // guarded by m_mutex; its provides() are fixed at construction

  // The queue and the threads.
  mutable std::mutex m_mutex;
  std::condition_variable m_cv;  // idle threads (waiting ones sleep on their own)
  RoutedQueue<Entry> m_queue;
  bool m_stopping = false;
  bool m_adapting = false;
  std::size_t m_target = 0;
  std::size_t m_alive = 0;
  std::vector<Sleeper*> m_sleepers;  // threads asleep in wait_for
  std::list<std::thread> m_threads;  // running work()
  std::list<std::thread> m_exited;   // retired, to be joined
  TaskCounters m_counters;
  // NOTE: a deque, so a thread's reference to its Slot survives slots added meanwhile.
  std::deque<Slot> m_slots;
  std::vector<std::size_t> m_usable;       // slots alive whose setups have not failed
  std::vector<std::string> m_usable_ids;   // their ids, for rendezvous_pick
  std::vector<std::shared_ptr<Job>> m_setups;  // on_every_worker, in order
  std::atomic<std::size_t> m_setups_added{0};
  std::exception_ptr m_slot_error;   // the last setup's exception
  std::exception_ptr m_setup_error;  // set while no thread is left because setups threw

  // The control thread: adapt's controller and the joining of retired threads.
  std::mutex m_control_mutex;
  std::condition_variable m_control_cv;
  std::optional<ScalingController> m_controller;
  bool m_control_stop = false;
  bool m_reap = false;
  std::atomic<bool> m_adapting_flag{false};
  std::atomic<bool> m_backlog_dirty{false};
  std::thread m_control;
};

}  // namespace scale::detail

namespace scale {

ThreadPoolManager::ThreadPoolManager(std::size_t threads, ThreadPoolOptions options)
    : m_pool(std::make_unique<detail::ThreadPool>(threads, std::move(options), *this, [this] { concurrency_changed(); })) {}
ThreadPoolManager::~ThreadPoolManager() { stop_reporting(); }

void ThreadPoolManager::resize(std::size_t threads) { m_pool->resize(threads); }
void ThreadPoolManager::adapt(ScalingPolicy policy) { m_pool->adapt(policy); }
Future<void> ThreadPoolManager::submit(detail::Chunk chunk) { return m_pool->submit(std::move(chunk)); }
void ThreadPoolManager::stop_call(const std::shared_ptr<detail::Job>& job) { m_pool->stop(job); }
std::size_t ThreadPoolManager::concurrency() const noexcept { return m_pool->target(); }
ManagerStats ThreadPoolManager::stats() const { return m_pool->stats(); }
Future<std::vector<std::string>> ThreadPoolManager::broadcast_targets() { return make_ready_future(m_pool->usable_ids()); }
void ThreadPoolManager::add_setup(std::shared_ptr<detail::Job> setup) { m_pool->add_setup(std::move(setup)); }
void ThreadPoolManager::backlog_changed() { m_pool->backlog_changed(); }
std::vector<detail::ReportedWorker> ThreadPoolManager::report_workers() const {
  std::vector<detail::ReportedWorker> workers;
  for (auto& id : m_pool->usable_ids()) {
    detail::ReportedWorker worker;
    worker.id = std::move(id);
    workers.push_back(std::move(worker));
  }
  return workers;
}

}  // namespace scale
