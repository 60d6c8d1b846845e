#pragma once
// For tests whose child (a spawned child or a process-pool worker) crashes on purpose, or reports
// its own signal dispositions. In a sanitizer build (`make test SANITIZE=address|thread`) the
// runtime installs handlers of its own in every process at start-up: it would catch the signal
// and replace the crash with a report and an exit status of its own, so the parent would not see
// the death the test expects, and a child's SIGSEGV, SIGBUS and SIGFPE would not be at their
// defaults. A plain build is unaffected.

#include <stdlib.h>  // setenv, unsetenv

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

/// Marks a function that crashes on purpose: no sanitizer instruments it or reports on it.
#define SCALE_TEST_DELIBERATE_CRASH \
  __attribute__((no_sanitize("address"), no_sanitize("undefined"), no_sanitize("thread")))

namespace scale_test {

/// The sanitizer runtimes' variables, each with its own signal handling turned off.
inline std::vector<std::string> no_sanitizer_signal_handlers() {
  constexpr const char* signals_off = "handle_segv=0:handle_abort=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0";
  std::vector<std::string> entries;
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"}) {
    const char* current = std::getenv(name);
    std::string value = current && *current ? std::string(current) + ":" : std::string();
    entries.push_back(std::string(name) + "=" + value + signals_off);
  }
  return entries;
}

/// Sets no_sanitizer_signal_handlers() in this process's environment while it lives, so that
/// every child spawned meanwhile (a pool spawns its workers with the parent's environment)
/// inherits it; the runtimes read these variables once, at start-up, so this process itself is
/// unaffected.
/// NOTE: declare it before the Runtime and the manager, so that no thread of theirs reads the
/// environment while it changes, and it is restored only after they are gone.
class CrashingChildren {
 public:
  CrashingChildren() {
    for (const std::string& entry : no_sanitizer_signal_handlers()) {
      const std::string name = entry.substr(0, entry.find('='));
      const char* current = std::getenv(name.c_str());
      m_saved.push_back({name, current ? std::optional<std::string>(current) : std::nullopt});
      ::setenv(name.c_str(), entry.c_str() + name.size() + 1, 1);
    }
  }
  ~CrashingChildren() {
    for (const auto& [name, value] : m_saved) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  CrashingChildren(const CrashingChildren&) = delete;
  CrashingChildren& operator=(const CrashingChildren&) = delete;

 private:
  struct Saved {
    std::string name;
    std::optional<std::string> value;
  };
  std::vector<Saved> m_saved;
};

}  // namespace scale_test
