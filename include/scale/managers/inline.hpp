#pragma once
/// \file scale::InlineManager: runs every chunk on the loop thread, one after another.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <scale/detail/job.hpp>
#include <scale/future.hpp>
#include <scale/provides.hpp>
#include <scale/scalability_manager.hpp>

namespace scale {

namespace detail {
class InlineState;
}

/// What an InlineManager offers, meant for designated initialisers:
/// `scale::InlineManager manager({.provides = {{"gpu", "1"}}});`
struct InlineOptions {
  /// Amounts and labels this manager offers (Provides: a number is an amount, anything else a
  /// label), for calls with RunOptions::resources or ::labels. Empty: none, so a call that needs
  /// any fails with scale::Unsatisfiable. Checked as parse_provides checks its text
  /// (std::invalid_argument).
  Provides provides{};
};

/// Runs chunks on the loop thread, in submission order, each as a separate loop task so that
/// other loop work (timers, events, progress callbacks) runs between chunks. Needs no threads;
/// the tier for debugging and for work that is all waiting.
///
/// Routing: the loop runs one chunk's code at a time, so a chunk that needs nothing never waits
/// for another; but a Future-returning function's chunks interleave at their co_awaits, so a chunk
/// of a call with RunOptions::resources holds them from its start to its end, across its
/// co_awaits, and a chunk whose amounts are held waits (in a queue of its class; chunks of other
/// classes go ahead). A call this manager can never meet fails at once with scale::Unsatisfiable.
/// A map made inside a chunk that holds amounts, before its first co_await, may use what that
/// chunk holds (docs/routing.md).
class InlineManager final : public ScalabilityManager {
 public:
  explicit InlineManager(InlineOptions options = {});
  /// Chunks waiting for amounts fail with scale::Stopped; chunks already running finish.
  ~InlineManager() override;

  Future<void> submit(detail::Chunk chunk) override;
  /// Fails the call's chunks that wait for amounts at once (the others are skipped when they come up).
  void stop_call(const std::shared_ptr<detail::Job>& job) override;

  std::size_t concurrency() const noexcept override { return 1; }

  /// Short chunks: one chunk blocks the loop while it runs, so they keep the loop responsive and
  /// progress reports regular, at a cost of one loop task per chunk.
  std::chrono::microseconds target_chunk_duration() const noexcept override { return std::chrono::milliseconds(2); }

  ManagerStats stats() const override;
  /// One target, "inline" (none once a setup threw).
  Future<std::vector<std::string>> broadcast_targets() override;
  void add_setup(std::shared_ptr<detail::Job> setup) override;

  std::string_view report_kind() const noexcept override { return "inline"; }
  /// One worker, "inline": the loop thread.
  std::vector<detail::ReportedWorker> report_workers() const override;

 private:
  // NOTE: shared with every chunk coroutine in flight, which may outlive the manager.
  std::shared_ptr<detail::InlineState> m_state;
};

}  // namespace scale
