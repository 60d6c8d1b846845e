#pragma once
// Cutting a call into chunks and feeding them to a manager: the one dispatch every Iterator
// algorithm shares.
//
// Why it looks like this:
//   - Chunks are cut as they are sent, not planned up front: the number in flight follows the
//     manager's concurrency now (chunks_in_flight: about two per worker, more on a cluster while
//     chunks are short; re-read as chunks complete and when the manager calls
//     concurrency_changed), so workers that join while a call runs get work at once.
//   - With RunOptions::chunk_size 0 the size comes from measured time per item (Job::record_run,
//     or the dispatch's own send-to-result time when a manager records none): the first chunks are
//     small probes, later ones aim at the manager's target_chunk_duration(), and none is larger
//     than what is left over twice the workers (guided self-scheduling), so the last chunks shrink
//     and do not straggle; they shrink no further than 1/50 of the target, where a chunk's own
//     cost would outweigh the balance.
//   - A stop (RunOptions::stop, or the application's stop on Ctrl-C) reaches the dispatch on the
//     loop: the Job's stop flag is set (running functions see Scope::stop_requested, queued chunks
//     are skipped), the manager withdraws what it holds of the call (stop_call), and the call fails
//     with Cancelled once nothing of it is in flight.
//   - on_progress is driven by a 100 ms timer on the loop while the call runs, and called once
//     more at completion; fraction counts what running items reported (Job::running_progress).
//   - A keyed call (Iterator::keyed_by) has its items in groups of one key each (key_groups.hpp):
//     a chunk ends where its group ends, and carries the group's key for the manager to route.
//   - A reporting manager (report_to) reads progress_now() on the loop and is told how the call
//     ended (report_ended: one check per call, none per chunk); a call of a manager that does
//     not report pays nothing more.
//   - Everything but backlog() runs on the loop thread: no lock or atomic per chunk besides the
//     counters a manager reads from its own threads.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string_view>
#include <utility>

#include <scale/detail/job.hpp>
#include <scale/detail/loop.hpp>
#include <scale/future.hpp>
#include <scale/run_options.hpp>
#include <scale/scalability_manager.hpp>

namespace scale::detail {

/// How many items the next chunk of a call gets (RunOptions::chunk_size 0). Pure, for tests.
///   remaining   items not yet cut;  total  items of the call
///   workers     the manager's concurrency now (at least 1)
///   per_item    measured time per item (fractions of a nanosecond count: a tight loop over ints
///               runs several items per nanosecond), or zero before any chunk was measured
///   target      the manager's target_chunk_duration()
using PerItem = std::chrono::duration<double, std::nano>;

inline std::size_t next_chunk_size(std::size_t remaining, std::size_t total, std::size_t workers, PerItem per_item,
                                   std::chrono::nanoseconds target) noexcept {
  if (remaining == 0) return 0;
  workers = std::max<std::size_t>(workers, 1);
  // Guided self-scheduling: never more than the rest over twice the workers.
  const std::size_t guided = std::max<std::size_t>(1, (remaining + 2 * workers - 1) / (2 * workers));
  if (per_item.count() <= 0) {
    // A probe: small in count (an item may be slow), and a small share of the call.
    constexpr std::size_t probe_cap = 64;
    const std::size_t probe = std::clamp<std::size_t>(total / (16 * workers), 1, probe_cap);
    return std::min({probe, guided, remaining});
  }
  // Items that fit in `duration`, at least one (a double: the quotient may exceed any size_t).
  auto items_in = [&](double duration) {
    const double items = duration / per_item.count();
    return items >= static_cast<double>(remaining) ? remaining : std::max<std::size_t>(1, static_cast<std::size_t>(items));
  };
  const std::size_t by_time = items_in(static_cast<double>(target.count()));
  // The tail shrinks only down to chunks of 1/50 of the target: below that, what a chunk costs
  // (a round trip) outweighs the balance a smaller chunk buys.
  constexpr double tail_floor_divisor = 50;
  const std::size_t floor = items_in(static_cast<double>(target.count()) / tail_floor_divisor);
  return std::min({by_time, std::max(guided, floor), remaining});
}

/// One running call: cuts chunks, keeps the number in flight at the manager's concurrency, and
/// completes `finished` once no chunk is in flight and none is left (or the call failed).
class Dispatch final : public CallDemand, public std::enable_shared_from_this<Dispatch> {
 public:
  Dispatch(std::shared_ptr<Job> job, ScalabilityManager* manager, RunOptions options)
      : m_job(std::move(job)),
        m_manager(manager),
        m_fixed_size(options.chunk_size),
        m_progress(std::move(options.progress)),
        m_on_progress(std::move(options.on_progress)),
        m_stop_token(std::move(options.stop)),
        m_total(m_job->size()),
        m_unfinished(m_total),
        m_current_size(options.chunk_size != 0 ? options.chunk_size : 1) {}

  /// On the loop: attaches to the manager and starts the first chunks (none when a stop was
  /// already requested: the call fails with Cancelled at once).
  Future<void> start() {
    Future<void> done = m_finished.get_future();
    m_started = std::chrono::steady_clock::now();
    if (m_stop_token.stop_requested() || application_stop_token().stop_requested()) {
      m_job->request_stop();
      m_stopped = true;
      maybe_finish();
      return done;
    }
    auto on_stop = [weak = weak_from_this()] {
      if (!loop_running()) return;  // the Runtime is going: its shutdown fails the call
      post([weak] {
        if (auto self = weak.lock()) self->stop();
      });
    };
    m_stop_callback.emplace(m_stop_token, on_stop);
    m_application_stop_callback.emplace(application_stop_token(), on_stop);
    if (m_on_progress) schedule_progress();
    // The size the first cut will use, so the backlog the manager sees at attach is already right.
    m_current_size.store(cut(std::max<std::size_t>(1, m_manager->concurrency())), std::memory_order_relaxed);
    m_manager->attach_call(shared_from_this());
    pump();
    return done;
  }

  std::size_t backlog() const noexcept override {
    const std::size_t size = std::max<std::size_t>(1, m_current_size.load(std::memory_order_relaxed));
    const std::size_t left = m_unfinished.load(std::memory_order_relaxed);
    return (left + size - 1) / size;
  }

  Progress progress_now() const override { return measure(false, true); }

  void wake() noexcept override {
    if (!loop_running()) return;  // the Runtime is going: nothing more starts
    if (m_wake_posted.exchange(true, std::memory_order_acq_rel)) return;
    post([weak = weak_from_this()]() mutable {
      if (auto self = weak.lock()) {
        self->m_wake_posted.store(false, std::memory_order_release);
        self->pump();
      }
    });
  }

 private:
  /// Starts chunks while the manager's concurrency allows and items are left. A chunk that
  /// completes at once calls back into pump(); that only asks the outer call to go round again,
  /// so the stack stays flat however many chunks complete synchronously.
  ///
  /// NOTE: once the call is cancelled (an error, or Stopped because the manager is being
  /// destroyed) the dispatch no longer touches the manager: it only waits for the chunks in flight.
  void pump() {
    if (m_ended) return;
    if (m_job->cancelled()) {
      maybe_finish();
      return;
    }
    if (m_pumping) {
      m_repump = true;
      return;
    }
    m_pumping = true;
    do {
      m_repump = false;
      const std::size_t workers = std::max<std::size_t>(1, m_manager->concurrency());
      const std::size_t lanes = std::max<std::size_t>(1, m_manager->chunks_in_flight(workers));
      while (!m_job->cancelled() && m_next < m_total && m_in_flight < lanes) {
        const std::size_t size = cut(workers);
        const std::size_t begin = m_next;
        std::string_view key;
        if (m_groups != nullptr) {
          while (m_groups->begins[m_group + 1] <= begin) ++m_group;
          key = m_groups->keys[m_group];
        }
        m_next += size;
        ++m_in_flight;
        run(shared_from_this(), begin, m_next, key);
      }
      if (m_next < m_total && !m_job->cancelled()) m_current_size.store(cut(workers), std::memory_order_relaxed);
    } while (m_repump);
    m_pumping = false;
    m_manager->backlog_changed();
    maybe_finish();
  }

  /// The next chunk's size, within the key group of m_next when the call is keyed.
  std::size_t cut(std::size_t workers) const noexcept {
    const std::size_t size = cut_unkeyed(workers);
    if (m_groups == nullptr) return size;
    std::size_t group = m_group;
    while (m_groups->begins[group + 1] <= m_next) ++group;
    return std::min(size, m_groups->begins[group + 1] - m_next);
  }

  std::size_t cut_unkeyed(std::size_t workers) const noexcept {
    if (m_fixed_size != 0) return std::min(m_fixed_size, m_total - m_next);
    std::size_t items = m_job->timed_items();
    std::chrono::nanoseconds took = m_job->timed_duration();
    if (items == 0) {
      items = m_own_items;
      took = m_own_duration;
    }
    const PerItem per_item = items == 0 ? PerItem(0) : PerItem(took) / static_cast<double>(items);
    return next_chunk_size(m_total - m_next, m_total, workers, per_item, m_manager->target_chunk_duration());
  }

  static Detached run(std::shared_ptr<Dispatch> self, std::size_t begin, std::size_t end, std::string_view key) {
    std::exception_ptr error;
    const auto sent = std::chrono::steady_clock::now();
    try {
      // NOTE: GCC 12 may destroy a temporary inside a co_await expression twice; every
      // co_await in the library awaits a named Future.
      Chunk chunk{self->m_job, begin, end, key, {}};
      Future<void> chunk_done = self->m_manager->submit(std::move(chunk));
      co_await std::move(chunk_done);
    } catch (...) {
      error = std::current_exception();
    }
    co_await ResumeOnLoop{};
    self->completed(begin, end, std::chrono::steady_clock::now() - sent, std::move(error));
  }

  /// A stop request, on the loop: nothing more starts, the manager withdraws what it holds.
  void stop() {
    if (m_ended || m_stopped) return;
    m_stopped = true;
    m_job->request_stop();
    m_manager->stop_call(m_job);
    pump();
  }

  void schedule_progress() {
    post_at(std::chrono::steady_clock::now() + progress_interval, [weak = weak_from_this()] {
      auto self = weak.lock();
      if (!self || self->m_ended) return;
      self->report_progress(false);
      if (!self->m_ended) self->schedule_progress();
    });
  }

  /// Calls on_progress when something moved since the last call (and always at the end). An
  /// exception it throws fails the call, as one from the function would.
  void report_progress(bool final) {
    const Progress progress = measure(final, true);
    if (!final && m_reported && progress.fraction == m_last_fraction && m_done == m_last_done) return;
    m_reported = true;
    m_last_fraction = progress.fraction;
    m_last_done = progress.items_done;
    try {
      m_on_progress(progress);
    } catch (...) {
      if (!final) fail(std::current_exception());
      else if (!m_error) m_error = std::current_exception();
    }
  }

  /// The call's progress now (final: as at its completion, fraction 1), never below what
  /// on_progress was last told. `ask_manager` false leaves workers at 0: a cancelled call no
  /// longer touches its manager, which may be gone.
  Progress measure(bool final, bool ask_manager) const {
    Progress progress;
    progress.items_total = m_total;
    progress.items_done = final ? m_total : m_done;
    double fraction = 1.0;
    if (!final) {
      const double running = std::max(0.0, m_job->running_progress());
      fraction = m_total == 0 ? 0.0
                              : std::min((static_cast<double>(m_done) + running) / static_cast<double>(m_total),
                                         max_running_fraction);
      fraction = std::max(fraction, m_last_fraction);
    }
    progress.fraction = fraction;
    const auto elapsed = std::chrono::steady_clock::now() - m_started;
    progress.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed);
    if (final)
      progress.eta = std::chrono::milliseconds(0);
    else if (fraction > 0)
      progress.eta = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed * ((1 - fraction) / fraction));
    if (ask_manager) progress.workers = m_manager->stats().workers_alive;
    return progress;
  }

  /// Tells a manager's report how the call ended (only a reported call: one check per call).
  void report_ended() noexcept {
    if (!reported()) return;
    CallEnd end = CallEnd::done;
    if (m_stopped)
      end = CallEnd::cancelled;
    else if (m_error || m_job->cancelled())
      end = CallEnd::failed;
    try {
      report_end(end, measure(end == CallEnd::done, end == CallEnd::done));
    } catch (...) {
      report_end(end, Progress{});  // stats() threw: the end still shows
    }
  }

  void completed(std::size_t begin, std::size_t end, std::chrono::nanoseconds took, std::exception_ptr error) {
    --m_in_flight;
    if (error) {
      fail(std::move(error));
    } else {
      const std::size_t items = end - begin;
      m_own_items += items;
      m_own_duration += took;
      m_done += items;
      m_unfinished.fetch_sub(items, std::memory_order_relaxed);
      if (m_progress) m_progress(m_done, m_total);
    }
    pump();
  }

  /// Keeps the first real error and stops further chunks from starting.
  void fail(std::exception_ptr failure) noexcept {
    m_job->cancel();
    try {
      std::rethrow_exception(failure);
    } catch (const ChunkSkipped&) {
      return;  // a consequence of another chunk's error, which that chunk records
    } catch (...) {
    }
    if (!m_error) m_error = std::move(failure);
  }

  void maybe_finish() {
    if (m_ended || m_in_flight != 0) return;
    if (m_next < m_total && !m_job->cancelled()) return;
    if (m_on_progress && !m_job->cancelled() && !m_error) report_progress(true);
    m_ended = true;
    report_ended();
    m_unfinished.store(0, std::memory_order_relaxed);
    m_stop_callback.reset();
    m_application_stop_callback.reset();
    // The manager's registry drops this call when it expires; an adapting manager re-reads its backlog.
    if (!m_job->cancelled()) m_manager->backlog_changed();
    if (m_stopped)
      m_finished.set_exception(std::make_exception_ptr(Cancelled(cancelled_message())));
    else if (m_error)
      m_finished.set_exception(m_error);
    else
      m_finished.set_value();
  }

  using StopCallback = std::stop_callback<std::function<void()>>;
  static constexpr auto progress_interval = std::chrono::milliseconds(100);
  static constexpr double max_running_fraction = 0.999999;  // 1 only at completion

  std::shared_ptr<Job> m_job;
  const KeyGroups* m_groups = m_job->key_groups().get();  // the Job keeps them
  std::size_t m_group = 0;                                 // the group of m_next (keyed calls)
  ScalabilityManager* m_manager;
  const std::size_t m_fixed_size;
  std::function<void(std::size_t, std::size_t)> m_progress;
  std::function<void(const Progress&)> m_on_progress;
  std::stop_token m_stop_token;
  const std::size_t m_total;
  Promise<void> m_finished;
  // Loop thread only.
  std::optional<StopCallback> m_stop_callback;
  std::optional<StopCallback> m_application_stop_callback;
  std::chrono::steady_clock::time_point m_started;
  bool m_stopped = false;
  bool m_reported = false;
  double m_last_fraction = 0;
  std::size_t m_last_done = 0;
  std::size_t m_next = 0;
  std::size_t m_in_flight = 0;
  std::size_t m_done = 0;
  std::size_t m_own_items = 0;
  std::chrono::nanoseconds m_own_duration{0};
  std::exception_ptr m_error;
  bool m_ended = false;
  bool m_pumping = false;
  bool m_repump = false;
  // Read by the manager's threads.
  std::atomic<std::size_t> m_unfinished;
  std::atomic<std::size_t> m_current_size;
  std::atomic<bool> m_wake_posted{false};
};

/// Runs every item of `job` on `manager` in chunks (RunOptions::chunk_size items each, or 0 for
/// sizes from measured time), watched and stopped as `options` say, and completes on the loop once all have finished, or fails with the
/// first error once the chunks already running have finished (no chunk of the job is still
/// running when the Future completes, unless the Runtime is shutting down).
inline Future<void> dispatch_all(std::shared_ptr<Job> job, ScalabilityManager* manager, RunOptions options) {
  co_await ResumeOnLoop{};
  auto dispatch = std::make_shared<Dispatch>(std::move(job), manager, std::move(options));
  Future<void> all_done = dispatch->start();
  co_await std::move(all_done);
}

}  // namespace scale::detail
