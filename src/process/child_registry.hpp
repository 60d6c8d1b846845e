#pragma once
// The pids of the worker processes this process has started and not yet reaped, in a table an
// async-signal handler can read: a second Ctrl-C kills them before the process ends, so no child
// outlives its manager even then.

#include <sys/types.h>

namespace scale::detail {

/// A child was started (the spawner calls it before anything else can signal the process).
void remember_child(pid_t pid) noexcept;
/// A child was reaped.
void forget_child(pid_t pid) noexcept;
/// SIGKILL to every remembered child; async-signal-safe.
void kill_remembered_children() noexcept;

}  // namespace scale::detail
