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

/// Registers a pending leaf state so that Runtime shutdown fails it with scale::Stopped.
/// Fails it at once when the Runtime is already stopping.
void track(const std::shared_ptr<StateBase>& state);

/// Removes a completed state from the shutdown registry.
void untrack(StateBase* state) noexcept;

/// Stopped by the first SIGINT/SIGTERM the Runtime handles (RuntimeOptions::handle_signals) or by
/// Runtime::request_stop(): every running call stops as through its RunOptions::stop.
std::stop_token application_stop_token() noexcept;

/// Writes one line to stderr, prefixed with "scale: ".
void log_error(std::string_view message) noexcept;

}  // namespace scale::detail
