#pragma once
// The crash handler of a process-pool worker (a ProcessPoolManager's child, which is also what a
// cluster worker's --scale-processes children are): when the worker dies of SIGSEGV, SIGBUS,
// SIGFPE, SIGILL or SIGABRT, it leaves a crash record (process/crash_record.hpp) for its parent,
// which turns it into the WorkerLost's capsule (process/crash_capsule.hpp).
//
// How. install_crash_handler() runs at worker start, before any item: it takes the record's
// descriptor out of the environment (SCALE_CRASH_FD), writes the worker's loaded objects into it,
// warms up the unwinder (its first use may allocate and resolve symbols, which a signal handler
// must not), gives the calling thread an alternate signal stack and installs one handler for the
// five signals with SA_ONSTACK. The handler then only reads atomics (running_task()), unwinds
// with boost::stacktrace::safe_dump_to into a static buffer, writes with pwrite, and re-raises
// the signal with its default action, so the parent sees the real signal (and a core dump where
// they are enabled). An alarm of a few seconds guards the dump: a worker whose crash corrupted
// the unwinder's state still dies instead of hanging.
//
// Threads. The alternate stack is per thread: the worker's threads that run items call
// add_crash_signal_stack() (the executor and the link's reader). A stack overflow on another
// thread (one the user's function started) dies of SIGSEGV without a capsule, since the handler
// has no stack to run on; any other crash there still leaves one. When two threads crash at
// once, the first writes the record and ends the process, the other waits for it.
//
// Sanitizers. ASan and UBSan install handlers of their own for these signals at start-up; this
// one is installed later and replaces them in the worker (allow_user_segv_handler, on by
// default), so a worker built with them leaves a capsule too.

namespace scale::detail {

/// In a worker, before it runs anything: installs the handler when the parent passed a crash
/// record (SCALE_CRASH_FD); otherwise does nothing. Call once, early, before other threads start.
void install_crash_handler();

/// Gives the calling thread an alternate signal stack of its own (once per thread), so that the
/// handler runs even when this thread's stack has overflowed.
void add_crash_signal_stack();

}  // namespace scale::detail
