// InlineManager: chunks as loop tasks, and the amounts the chunks of calls with resources hold.
//
// Why it looks like this:
//   - A chunk that needs nothing runs as it always did: one loop task, no lock, no allocation
//     beyond its coroutine. Only a chunk with RunOptions::resources touches InlineState's lock,
//     ledger and queue (submit may come from any thread; the loop is the usual caller).
//   - A chunk holds its amounts from its start to its end. On the loop only one chunk's code runs
//     at a time, but a Future-returning function suspends in co_await and another chunk starts
//     meanwhile: without holding across the suspension, two gpu=1 chunks could both be in the
//     middle of their work on a manager that offers gpu=1.
//   - Each chunk starts inside a ChunkFrame (as a pool thread's chunk does), so a call made in
//     its synchronous start (before its first co_await) records it as where it was made
//     (Job::made_in). NOTE: such a nested call may need what its outer chunk holds while the outer
//     chunk awaits it; it would wait for ever for an amount only its own awaiting outer chunk can
//     release. So a chunk whose amounts do not fit runs under what the chunks it is nested in
//     hold (m_holders), as part of their work, and the nested call completes. A call made after
//     the outer chunk's first co_await cannot be told from an unrelated call on the loop: it
//     waits like one (docs/routing.md says so and what to do).
//   - The manager is one worker, "inline". Its setups (on_every_worker) run on the loop before the
//     next chunk after they were added; a chunk that comes while one runs waits for it (a
//     Future-returning setup suspends, and chunks must not start in between). A setup that throws
//     leaves no worker: every later chunk fails with its exception.

#include <scale/managers/inline.hpp>

#include <atomic>
#include <coroutine>
#include <exception>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <scale/detail/loop.hpp>
#include <scale/detail/nesting.hpp>
#include <scale/error.hpp>

#include "core/help_while_waiting.hpp"
#include "core/resource_ledger.hpp"
#include "core/routed_queue.hpp"

namespace scale::detail {

namespace {

const Resources& resources_of(const Chunk& chunk) noexcept { return chunk.job->policy().requirement.resources; }

/// Always suspends and resumes through the loop's queue, even on the loop thread.
struct Requeue {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> handle) const noexcept { post(handle); }
  void await_resume() const noexcept {}
};

}  // namespace

class InlineState {
 public:
  explicit InlineState(InlineOptions options) : m_ledger(std::move(options.provides), "InlineOptions::provides") {
    counters.workers_alive = 1;
  }

  TaskCounters counters;
  static constexpr const char* worker_id = "inline";

  /// Loop thread: setups were added since the last chunk, or one threw.
  bool setups_pending() const noexcept {
    return m_setup_error || m_setups_run != m_setups_added.load(std::memory_order_acquire);
  }

  /// Loop thread. Runs the setups added since the last chunk, one at a time, in order; a
  /// Future-returning one is co_awaited, and chunks that come meanwhile wait for it. Throws the
  /// exception a setup threw, now and for every later chunk.
  Future<void> run_setups() {
    if (m_setup_error) std::rethrow_exception(m_setup_error);
    if (m_setup_running) {
      Promise<void> turn;
      Future<void> ready = turn.get_future();
      m_setup_waiting.push_back(std::move(turn));
      co_await std::move(ready);
      co_return;
    }
    m_setup_running = true;
    std::exception_ptr error;
    try {
      while (std::shared_ptr<Job> setup = next_setup()) {
        if (setup->is_async()) {
          Future<void> done = setup->run_async(0, 1);
          co_await std::move(done);
        } else {
          setup->run(0, 1);
        }
        ++m_setups_run;
      }
    } catch (...) {
      error = std::current_exception();
      m_setup_error = error;
      counters.setups_failed = 1;
      counters.workers_alive = 0;
    }
    m_setup_running = false;
    for (auto& waiting : std::exchange(m_setup_waiting, {})) {
      if (error)
        waiting.set_exception(error);
      else
        waiting.set_value();
    }
    if (error) std::rethrow_exception(error);
  }
  /// Any thread: the setup runs before the next chunk.
  void add_setup(std::shared_ptr<Job> setup) {
    std::lock_guard lock(m_mutex);
    m_setups.push_back(std::move(setup));
    m_setups_added.store(m_setups.size(), std::memory_order_release);
  }
  bool setup_failed() const noexcept { return counters.setups_failed.load(std::memory_order_relaxed) != 0; }

  /// The refusal of a call this manager can never meet, or null. Its provides never change.
  std::exception_ptr refusal(const Requirement& requirement) const {
    if (requirement.empty() || m_ledger.can_meet(requirement)) return nullptr;
    return std::make_exception_ptr(Unsatisfiable(unsatisfiable_message(requirement, {{"inline", m_ledger.provides()}})));
  }

  /// A chunk with amounts may start: true when it took them now; false when it runs under what
  /// the chunks it is nested in hold; nullopt when it must wait, with `turn` set to the Future
  /// that completes when it may (true: it holds them then) or fails if it is withdrawn.
  std::optional<bool> try_start(const Chunk& chunk, Future<bool>& turn) {
    const Resources& resources = resources_of(chunk);
    std::lock_guard lock(m_mutex);
    if (m_stopping) throw Stopped();
    if (m_ledger.take(resources)) return true;
    if (lent(*chunk.job, resources)) return false;
    Waiting waiting{chunk, Promise<bool>()};
    turn = waiting.turn.get_future();
    m_waiting.push_back(std::move(waiting), resources);
    return std::nullopt;
  }

  /// A chunk that took its amounts starts: what is made in it may run under them.
  void add_holder(const NestingFrame* frame, const Resources& resources) {
    std::lock_guard lock(m_mutex);
    m_holders.push_back(Holder{frame, &resources});
  }

  /// The chunk made in `frame` ends (null: a chunk given amounts that will never start): gives its
  /// amounts back and starts the waiting chunks that fit now.
  void release(const NestingFrame* frame, const Resources& resources) {
    std::vector<Waiting> started;
    {
      std::lock_guard lock(m_mutex);
      m_ledger.release(resources);
      if (frame != nullptr) std::erase_if(m_holders, [&](const Holder& holder) { return holder.frame == frame; });
      while (auto next = m_waiting.take_next([&](const Resources& asked, const Waiting& queued) {
               return queued.chunk.job->cancelled() || m_ledger.fits(asked);
             })) {
        // A cancelled chunk is skipped when it starts; it takes nothing.
        next->holds = !next->chunk.job->cancelled() && m_ledger.take(resources_of(next->chunk));
        started.push_back(std::move(*next));
      }
    }
    // NOTE: a turn already failed (the Runtime stopping fails every pending Promise) starts no
    // chunk, so what was taken for it goes back at once.
    for (auto& waiting : started)
      if (!waiting.turn.set_value(waiting.holds) && waiting.holds) release(nullptr, resources_of(waiting.chunk));
  }

  /// Fails the waiting chunks of `job` (all of them when null: the manager goes) with `error`.
  void withdraw(const Job* job, std::exception_ptr error, bool stopping) {
    std::vector<Waiting> withdrawn;
    {
      std::lock_guard lock(m_mutex);
      if (stopping) m_stopping = true;
      withdrawn = m_waiting.take_all_if([&](const Waiting& waiting) { return job == nullptr || waiting.chunk.job.get() == job; });
    }
    for (auto& waiting : withdrawn) {
      waiting.chunk = Chunk{};
      waiting.turn.set_exception(error);
    }
  }

 private:
  struct Waiting {
    Chunk chunk;
    Promise<bool> turn;
    bool holds = false;
  };
  /// A running chunk that took amounts, by the record that Jobs made in it point to.
  struct Holder {
    const NestingFrame* frame;
    const Resources* resources;
  };

  /// Under m_mutex: whether the chunks `job` is nested in hold at least `resources` between them.
  bool lent(const Job& job, const Resources& resources) const {
    if (m_holders.empty() || !job.made_in()) return false;
    for (const auto& [name, asked] : resources) {
      double held = 0;
      for (const NestingFrame* at = job.made_in().get(); at != nullptr; at = at->outer.get())
        for (const Holder& holder : m_holders)
          if (holder.frame == at)
            if (const auto found = holder.resources->find(name); found != holder.resources->end()) held += found->second;
      if (held < asked) return false;
    }
    return true;
  }

  std::mutex m_mutex;
  ResourceLedger m_ledger;
  RoutedQueue<Waiting> m_waiting;
  std::vector<Holder> m_holders;
  bool m_stopping = false;
  /// The first setup not yet run, or null.
  std::shared_ptr<Job> next_setup() {
    std::lock_guard lock(m_mutex);
    return m_setups_run < m_setups.size() ? m_setups[m_setups_run] : nullptr;
  }

  // The setups (on_every_worker), under m_mutex, and how many there are.
  std::vector<std::shared_ptr<Job>> m_setups;
  std::atomic<std::size_t> m_setups_added{0};
  // Loop thread only: how far they have run.
  std::size_t m_setups_run = 0;
  bool m_setup_running = false;
  std::vector<Promise<void>> m_setup_waiting;
  std::exception_ptr m_setup_error;
};

namespace {

/// Starts a chunk inside a ChunkFrame, so that what its synchronous start makes is nested in it;
/// a chunk that took amounts is registered as their holder first.
Future<void> start_in_frame(Chunk chunk, InlineState& state, bool holds,
                            std::shared_ptr<const NestingFrame>& record) {
  ChunkFrame frame(*chunk.job);
  if (holds) {
    record = current_nesting_frame();
    state.add_holder(record.get(), resources_of(chunk));
  }
  return run_chunk_on_loop(std::move(chunk));
}

Future<void> run_inline(Chunk chunk, std::shared_ptr<InlineState> state) {
  TaskCounters& counters = state->counters;
  // Kept for ran_on: the chunk itself may be handed on.
  const std::shared_ptr<Job> job = chunk.job;
  const std::size_t begin = chunk.begin;
  const std::size_t end = chunk.end;
  ++counters.queued;
  co_await Requeue{};
  const bool routed = !resources_of(chunk).empty();
  bool holds = false;
  std::exception_ptr error;
  if (state->setups_pending()) {
    try {
      Future<void> set_up = state->run_setups();
      co_await std::move(set_up);
    } catch (...) {
      error = std::current_exception();
    }
  }
  if (routed && !error) {
    try {
      Future<bool> turn;
      std::optional<bool> now = state->try_start(chunk, turn);
      if (now)
        holds = *now;
      else
        holds = co_await std::move(turn);
    } catch (...) {
      error = std::current_exception();  // withdrawn (its call was stopped) or the manager went
    }
  }
  --counters.queued;
  if (error) {
    ++counters.failed;
    std::rethrow_exception(error);
  }
  ++counters.running;
  std::shared_ptr<const NestingFrame> record;
  try {
    // A routed chunk keeps its Chunk to give its amounts back; any other hands it on.
    Future<void> done = routed ? start_in_frame(chunk, *state, holds, record)
                               : start_in_frame(std::move(chunk), *state, holds, record);
    co_await std::move(done);
  } catch (...) {
    error = std::current_exception();
  }
  if (holds) state->release(record.get(), resources_of(chunk));
  --counters.running;
  if (error) {
    ++counters.failed;
    std::rethrow_exception(error);
  }
  ++counters.done;
  job->ran_on(begin, end, InlineState::worker_id);
}

}  // namespace

}  // namespace scale::detail

namespace scale {

InlineManager::InlineManager(InlineOptions options) : m_state(std::make_shared<detail::InlineState>(std::move(options))) {}

InlineManager::~InlineManager() {
  stop_reporting();
  m_state->withdraw(nullptr, std::make_exception_ptr(Stopped()), true);
}

std::vector<detail::ReportedWorker> InlineManager::report_workers() const {
  detail::ReportedWorker worker;
  worker.id = detail::InlineState::worker_id;
  return {worker};
}

Future<void> InlineManager::submit(detail::Chunk chunk) {
  if (auto refused = m_state->refusal(chunk.job->policy().requirement)) {
    ++m_state->counters.failed;
    return make_failed_future<void>(std::move(refused));
  }
  if (!chunk.worker.empty() && chunk.worker != detail::InlineState::worker_id) {
    ++m_state->counters.failed;
    return make_failed_future<void>(std::make_exception_ptr(NoWorkers(
        "scale: InlineManager has one worker, \"inline\", and no worker \"" + chunk.worker + "\"")));
  }
  return detail::run_inline(std::move(chunk), m_state);
}

Future<std::vector<std::string>> InlineManager::broadcast_targets() {
  std::vector<std::string> targets;
  if (!m_state->setup_failed()) targets.emplace_back(detail::InlineState::worker_id);
  return make_ready_future(std::move(targets));
}

void InlineManager::add_setup(std::shared_ptr<detail::Job> setup) { m_state->add_setup(std::move(setup)); }

void InlineManager::stop_call(const std::shared_ptr<detail::Job>& job) {
  m_state->withdraw(job.get(), std::make_exception_ptr(Cancelled(detail::cancelled_message())), false);
}

ManagerStats InlineManager::stats() const { return m_state->counters.snapshot(); }

}  // namespace scale
