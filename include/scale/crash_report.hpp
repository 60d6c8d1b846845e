#pragma once
/// \file scale::CrashReport: why a worker process died of a signal, taken in the crashing process.

#include <cstddef>
#include <string>
#include <vector>

namespace scale {

/// The capsule of a worker process that died of SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT while
/// running an item (scale::WorkerLost::capsule()). The stack is taken in the crashing process (its
/// frame addresses, written by an async-signal-safe handler on an alternate stack) and symbolized
/// outside it, against the same executable.
struct CrashReport {
  int signal = 0;           ///< e.g. SIGSEGV
  std::string signal_name;  ///< e.g. "SIGSEGV"
  std::size_t item_index = 0;  ///< the item that was running, as an index into the call's items
  std::string item;            ///< that item as JSON text, cut at 4 KiB
  /// One line per frame, innermost first: "function at file:line" where debug information allows.
  std::vector<std::string> stack;
  std::string host;  ///< the host the process ran on
  int pid = 0;       ///< its process id
};

}  // namespace scale
