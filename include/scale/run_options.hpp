#pragma once
/// \file scale::RunOptions: how one map / filter / reduce / for_each call is cut up and watched.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <stop_token>
#include <string>

#include <scale/progress.hpp>

namespace scale {

/// The options every Iterator algorithm takes as its last argument, meant for designated
/// initialisers: `numbers.map(fn, {.chunk_size = 100, .progress = report})`.
/// Every member has a default initializer, so `-Wextra` says nothing of the ones a call leaves out.
/// NOTE: with GCC 12, build the options first when the call sits inside `co_await`
/// (`scale::RunOptions options{.chunk_size = 2}; co_await numbers.map(fn, options);`).
struct RunOptions {
  /// Items per chunk, the unit a manager runs and reports on. 0: sizes from measured time per
  /// item: small first chunks, then chunks of about the manager's target_chunk_duration()
  /// (1 ms on a thread pool, 50 ms on a process pool, 200 ms on a cluster), smaller as the call
  /// nears its end so the last ones do not straggle.
  std::size_t chunk_size = 0;

  /// How often a chunk runs again after its worker was lost (a child process or server
  /// that died). Unset: the manager's own default. Only the process and cluster managers
  /// lose workers; the thread tiers never retry (a thread that crashes ends the process).
  std::optional<unsigned> max_retries{};

  /// Called on the loop thread after each chunk completes, with the number of items done
  /// so far and the total. `done` never decreases and the last call has done == total.
  std::function<void(std::size_t done, std::size_t total)> progress{};

  /// Per-task time limit; zero means none. The process and cluster managers enforce it by
  /// failing the task and replacing its worker. The thread tiers (InlineManager,
  /// ThreadPoolManager) cannot stop a running function without killing the process, so
  /// they do not enforce it: bound slow work inside the function itself.
  std::chrono::milliseconds timeout{0};

  /// Stops the call: no new chunk starts, queued chunks are withdrawn, running functions see
  /// Scope::stop_requested(), and the call fails with scale::Cancelled once the running chunks
  /// have returned. A token already stopped fails the call at once and runs nothing. Ctrl-C
  /// (SIGINT/SIGTERM, see RuntimeOptions) stops every call the same way.
  std::stop_token stop{};

  /// After a stop, how long a process or cluster worker may keep running a stopped chunk before
  /// it is killed and replaced (not counted as lost). The thread tiers cannot kill a thread: there
  /// the call waits for running functions to return. Negative: std::invalid_argument.
  std::chrono::milliseconds grace{2000};

  /// Called on the loop thread at most every 100 ms while the call runs, and exactly once when it
  /// completes (fraction 1, items_done == items_total), with how far it has got: finished items
  /// plus what running items report through Scope::progress.
  std::function<void(const Progress&)> on_progress{};

  /// Amounts each running chunk of the call holds of what workers provide (`{{"gpu", 1}}`): a
  /// worker that provides gpu=2 runs at most two such chunks at once. Amounts must be finite and
  /// > 0 (else std::invalid_argument). No worker present or seen that could ever hold them:
  /// scale::Unsatisfiable within 100 ms; a matching worker busy: the chunks wait for it, and
  /// chunks of other calls never wait behind them. (Named `resources`: `requires` is a keyword.)
  std::map<std::string, double> resources{};

  /// Labels a worker must provide with exactly these values (`{{"site", "eu-1"}}`).
  std::map<std::string, std::string> labels{};
};

}  // namespace scale
