#pragma once
// The application's stop: what the first Ctrl-C (or Runtime::request_stop) requests, and the
// handlers for SIGINT and SIGTERM that request it.
//
// Why it looks like this:
//   - One std::stop_source per Runtime (a new Runtime starts unstopped), behind a mutex: each
//     call's dispatch reads the token once as it starts (loop.hpp, application_stop_token).
//   - The handler itself does only what is async-signal-safe: the first signal writes a byte to a
//     pipe that a watcher thread reads (it requests the stop, so the stop callbacks run on that
//     thread and post to the loop); a second signal kills the worker processes this process
//     started (child_registry.hpp) and ends the process with the signal's default action.
//   - Worker processes never install them: a Ctrl-C in a terminal reaches the whole process
//     group, and the workers leave it to their manager (they ignore SIGINT, worker_link.cpp).

namespace scale::detail {

/// A fresh, unstopped application stop (a Runtime starts).
void reset_application_stop();
/// Stops every running call (as through RunOptions::stop) and every later one of this Runtime.
void request_application_stop();
bool application_stop_requested() noexcept;

/// SIGINT and SIGTERM handling while it lives (RuntimeOptions::handle_signals); restores the
/// previous handlers when destroyed. One at a time.
class SignalHandling {
 public:
  SignalHandling();
  ~SignalHandling();
  SignalHandling(const SignalHandling&) = delete;
  SignalHandling& operator=(const SignalHandling&) = delete;
};

}  // namespace scale::detail
