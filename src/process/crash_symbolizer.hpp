#pragma once
// The parent's side of a crash stack: a worker's frame addresses (process/crash_record.hpp) as
// the lines of CrashReport::stack.
//
// Each address is made relative to the object it lies in within the worker (its executable or a
// shared library, recorded at worker start), then placed in the same object as this process has
// it mapped: the worker is this very executable with the same libraries, only at other ASLR
// bases. Boost.Stacktrace (the libbacktrace backend: DWARF line tables, then the symbol table)
// names it. A return address is looked up one byte earlier, so the line is that of the call, not
// of the instruction after it; the interrupted instruction itself is looked up as it is.

#include <string>
#include <vector>

#include "process/crash_record.hpp"

namespace scale::detail {

/// One line per frame, innermost first: "function at file:line" where debug information allows,
/// else "function in object" or "0x<offset> in object". The handler's own frames (those inside
/// the signal handler, up to the interrupted instruction) are dropped. Any thread; the naming
/// itself runs on one thread of its own (see crash_symbolizer.cpp).
std::vector<std::string> symbolize_crash(const CrashRecord& record);

}  // namespace scale::detail
