// A lost worker's capsule (process/crash_capsule.hpp).

#include "process/crash_capsule.hpp"

#include <signal.h>
#include <unistd.h>

#include <string>

#include "core/host_name.hpp"
#include "process/crash_symbolizer.hpp"

namespace scale::detail {

bool is_crash_signal(int signal) noexcept {
  return signal == SIGSEGV || signal == SIGBUS || signal == SIGFPE || signal == SIGILL || signal == SIGABRT;
}

std::optional<CrashReport> crash_capsule(const ExitInfo& exit, const CrashRecordFile& record, std::uint64_t task_id,
                                         const Chunk& chunk) {
  if (!exit.signaled() || !is_crash_signal(exit.signal) || !chunk.job) return std::nullopt;
  std::optional<CrashRecord> written = record.read();
  if (!written || written->header.running == 0 || written->header.task_id != task_id) return std::nullopt;
  CrashReport report;
  report.signal = exit.signal;
  report.signal_name = signal_name(exit.signal);
  report.item_index = chunk.begin + static_cast<std::size_t>(written->header.item);
  report.item = chunk.job->item_text(report.item_index);
  report.stack = symbolize_crash(*written);
  report.host = host_name();
  report.pid = exit.pid;
  return report;
}

}  // namespace scale::detail
