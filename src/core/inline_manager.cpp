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

#include <scale/managers/inline.hpp>

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
  ++counters.queued;
  co_await Requeue{};
  const bool routed = !resources_of(chunk).empty();
  bool holds = false;
  std::exception_ptr error;
  if (routed) {
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
}

}  // namespace

}  // namespace scale::detail

namespace scale {

InlineManager::InlineManager(InlineOptions options) : m_state(std::make_shared<detail::InlineState>(std::move(options))) {}

InlineManager::~InlineManager() { m_state->withdraw(nullptr, std::make_exception_ptr(Stopped()), true); }

Future<void> InlineManager::submit(detail::Chunk chunk) {
  if (auto refused = m_state->refusal(chunk.job->policy().requirement)) {
    ++m_state->counters.failed;
    return make_failed_future<void>(std::move(refused));
  }
  return detail::run_inline(std::move(chunk), m_state);
}

void InlineManager::stop_call(const std::shared_ptr<detail::Job>& job) {
  m_state->withdraw(job.get(), std::make_exception_ptr(Cancelled(detail::cancelled_message())), false);
}

ManagerStats InlineManager::stats() const { return m_state->counters.snapshot(); }

}  // namespace scale
