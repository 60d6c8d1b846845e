// A worker's crash handler (process/crash_handler.hpp).

// Boost.Stacktrace from Debian's libboost_stacktrace_backtrace (linked in CMakeLists.txt): its
// collect() walks the stack with the unwinder (_Unwind_Backtrace) and allocates nothing.
#define BOOST_STACKTRACE_DYN_LINK
#include <boost/stacktrace/safe_dump_to.hpp>

#include "process/crash_handler.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "process/crash_context.hpp"
#include "process/crash_record.hpp"
#include <scale/detail/loop.hpp>

namespace scale::detail {

namespace {

constexpr int crash_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
/// Enough for the handler and the unwinder, with the sanitizers' larger frames too.
constexpr std::size_t signal_stack_size = 256 * 1024;
/// Seconds the handler may take before SIGALRM ends the process anyway.
constexpr unsigned dump_deadline_seconds = 5;

int g_record_fd = -1;
std::atomic<long> g_handling_thread{0};  // the thread writing the record, once one is
// One more than a record keeps: safe_dump_to counts the terminating null frame.
const void* g_frames[crash_max_frames + 1];  // boost::stacktrace::frame::native_frame_ptr_t

void write_at(const void* bytes, std::size_t size, std::size_t offset) noexcept {
  const char* at = static_cast<const char*>(bytes);
  while (size > 0) {
    ssize_t n = ::pwrite(g_record_fd, at, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    at += n;
    offset += static_cast<std::size_t>(n);
    size -= static_cast<std::size_t>(n);
  }
}

void restore_default_actions() noexcept {
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  for (int signal : crash_signals) ::sigaction(signal, &action, nullptr);
}

std::uint64_t interrupted_pc(void* context) noexcept {
  if (context == nullptr) return 0;
  [[maybe_unused]] const auto* user = static_cast<const ucontext_t*>(context);
#if defined(__x86_64__)
  return static_cast<std::uint64_t>(user->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return static_cast<std::uint64_t>(user->uc_mcontext.pc);
#else
  return 0;
#endif
}

/// Async-signal-safe from here to its end: atomics, pwrite, sigaction, alarm, raise, and the
/// unwinder warmed up at install.
void on_crash_signal(int signal, siginfo_t* info, void* context) {
  const long me = ::syscall(SYS_gettid);
  long expected = 0;
  if (!g_handling_thread.compare_exchange_strong(expected, me)) {
    if (expected == me) {  // a crash inside the handler: die of it
      restore_default_actions();
      ::raise(signal);
      return;
    }
    for (;;) ::pause();  // another thread writes the record and ends the process
  }
  ::alarm(dump_deadline_seconds);

  CrashRecordHeader header;
  header.signal = signal;
  header.code = info ? info->si_code : 0;
  header.fault_address = info ? reinterpret_cast<std::uint64_t>(info->si_addr) : 0;
  header.pc = interrupted_pc(context);
  const RunningTask task = running_task();
  header.running = task.running ? 1 : 0;
  header.task_id = task.task_id;
  header.item = task.item;
  header.pid = static_cast<std::int32_t>(::getpid());

  const std::size_t stored = boost::stacktrace::safe_dump_to(0, g_frames, sizeof g_frames);
  std::uint32_t count = 0;
  while (count < stored && count < crash_max_frames && g_frames[count] != nullptr) ++count;
  write_at(g_frames, count * sizeof g_frames[0], crash_frames_offset);
  header.frame_count = count;
  header.magic = crash_record_magic;  // last: the parent reads a record only once it is whole
  write_at(&header, sizeof header, crash_header_offset);

  // The default action for the real signal: pending (it is blocked while its handler runs)
  // until this returns, then it ends the process as if no handler had been there.
  restore_default_actions();
  ::raise(signal);
}

/// The record's descriptor from SCALE_CRASH_FD (taken out of the environment, so the worker's
/// own children never take it for theirs), or -1.
int take_record_fd() {
  const char* text = std::getenv(crash_fd_env);
  if (text == nullptr) return -1;
  char* end = nullptr;
  const long fd = std::strtol(text, &end, 10);
  const bool ok = *text != '\0' && *end == '\0' && fd >= 0 && fd < (1 << 20);
  ::unsetenv(crash_fd_env);
  if (!ok || ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC) != 0) {
    log_error(std::string("scale: ") + crash_fd_env + " names no descriptor; this worker leaves no crash capsule");
    return -1;
  }
  return static_cast<int>(fd);
}

}  // namespace

void add_crash_signal_stack() {
  thread_local bool added = false;
  if (added) return;
  void* memory = ::mmap(nullptr, signal_stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    log_error("scale: no alternate signal stack for a worker thread (mmap failed); a stack overflow on it leaves "
              "no crash capsule");
    return;
  }
  stack_t stack;
  stack.ss_sp = memory;
  stack.ss_size = signal_stack_size;
  stack.ss_flags = 0;
  if (::sigaltstack(&stack, nullptr) != 0) {
    ::munmap(memory, signal_stack_size);
    return;
  }
  added = true;  // NOTE: never unmapped: the thread lives as long as the worker
}

void install_crash_handler() {
  g_record_fd = take_record_fd();
  if (g_record_fd < 0) return;
  const std::string objects = format_loaded_objects(loaded_objects());
  write_at(objects.data(), objects.size(), crash_objects_offset);
  // Warm-up: the unwinder's first walk registers its tables and resolves its symbols.
  boost::stacktrace::safe_dump_to(0, g_frames, sizeof g_frames);
  add_crash_signal_stack();

  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_sigaction = on_crash_signal;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  // Nothing but the deadline's SIGALRM interrupts the dump; a crash signal while blocked ends the
  // process at once.
  sigfillset(&action.sa_mask);
  sigdelset(&action.sa_mask, SIGALRM);
  for (int signal : crash_signals) ::sigaction(signal, &action, nullptr);
}

}  // namespace scale::detail
