#pragma once
// The runtime's loop, as the headers see it. Implemented in src/core/runtime.cpp.

#include <chrono>
#include <coroutine>
#include <memory>
#include <stop_token>
#include <string_view>

#include <scale/detail/unique_function.hpp>

namespace scale::detail {

class StateBase;

/// True on the Runtime's loop thread.
bool on_loop_thread() noexcept;

/// True while a Runtime exists and its loop accepts work.
bool loop_running() noexcept;

/// Resumes `handle` on the loop. With no running loop, resumes it here and now.
void post(std::coroutine_handle<> handle) noexcept;

/// Runs `fn` on the loop. With no running loop, runs it here and now.
void post(UniqueFunction fn) noexcept;

/// Runs `fn` on the loop once `when` has passed. Returns false (and drops `fn`) with no running loop.
bool post_at(std::chrono::steady_clock::time_point when, UniqueFunction fn) noexcept;

/// A new Promise's state: notes the shutdown registry's generation, so that it is tracked once
/// waited on (track_waited); fails it with scale::Stopped at once when the Runtime is stopping.
void prepare_tracking(StateBase& state) noexcept;

/// Registers a pending Promise's state whose consumer is about to wait, so that Runtime shutdown
/// fails it with scale::Stopped; fails it at once when a shutdown came after it was made.
void track_waited(const std::shared_ptr<StateBase>& state) noexcept;

/// True when a Runtime shutdown began after `state` was made (prepare_tracking).
bool stopped_since_made(const StateBase& state) noexcept;

/// Removes a completed state from the shutdown registry.
void untrack(StateBase* state) noexcept;

/// Stopped by the first SIGINT/SIGTERM the Runtime handles (RuntimeOptions::handle_signals) or by
/// Runtime::request_stop(): every running call stops as through its RunOptions::stop.
std::stop_token application_stop_token() noexcept;

/// Writes one line to stderr, prefixed with "scale: ".
void log_error(std::string_view message) noexcept;

}  // namespace scale::detail
