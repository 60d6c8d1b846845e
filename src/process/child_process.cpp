// Spawning, linking and reaping child processes: see src/process/child_process.hpp.

#include "process/child_process.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "process/child_registry.hpp"
#include <scale/detail/loop.hpp>
#include <scale/future.hpp>

extern char** environ;

namespace scale::detail {

// ----- exit statuses ------------------------------------------------------------------------

std::string signal_name(int signal) {
  if (const char* abbrev = ::sigabbrev_np(signal)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(signal);
}

ExitInfo make_exit_info(pid_t pid, int raw_status) {
  ExitInfo info;
  info.pid = pid;
  info.known = true;
  info.raw_status = raw_status;
  if (WIFEXITED(raw_status)) {
    info.exit_status = WEXITSTATUS(raw_status);
  } else if (WIFSIGNALED(raw_status)) {
    info.signal = WTERMSIG(raw_status);
    info.core_dumped = WCOREDUMP(raw_status);
  }
  return info;
}

std::string ExitInfo::describe() const {
  if (!known) return "ended with an unknown status (it was reaped by other code)";
  if (signal == 0) return "exited with status " + std::to_string(exit_status);
  const std::string name = signal_name(signal);
  std::string text = "killed by " +
                     (name.rfind("SIG", 0) == 0 ? "signal " + name + " (" + std::to_string(signal) + ")" : name);
  if (core_dumped) text += " (core dumped)";
  return text;
}

// ----- descriptors --------------------------------------------------------------------------

namespace {

std::string errno_text(int error) { return std::strerror(error); }

[[noreturn]] void throw_errno(const std::string& what, int error = errno) {
  throw Error("scale: " + what + " failed: " + errno_text(error));
}

/// Moves a close-on-exec descriptor to a number of at least 10, so that arranging fds 0 and 3
/// in the child can never overwrite it.
int move_high(int fd) {
  if (fd >= 10) return fd;
  int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  int error = errno;
  ::close(fd);
  if (high < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC)", error);
  return high;
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int pidfd_send_signal(int pidfd, int signal) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0));
}

bool starts_with_name(const char* entry, std::string_view name) {
  return std::strncmp(entry, name.data(), name.size()) == 0 && entry[name.size()] == '=';
}

std::string_view name_of(std::string_view entry) { return entry.substr(0, entry.find('=')); }

}  // namespace

// ----- the handle ---------------------------------------------------------------------------

struct ChildState {
  pid_t pid = -1;
  std::function<void(const ExitInfo&)> on_exit;
  mutable std::mutex mutex;
  mutable std::condition_variable reaped_cv;
  int pidfd = -1;                // guarded by mutex; closed when reaped
  std::optional<ExitInfo> exit;  // guarded by mutex

  ~ChildState() {
    if (pidfd >= 0) ::close(pidfd);
  }
};

ChildProcess::ChildProcess(std::shared_ptr<ChildState> state, int link_fd) noexcept
    : m_state(std::move(state)), m_link(link_fd) {}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : m_state(std::move(other.m_state)), m_link(std::exchange(other.m_link, -1)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    close_link();
    m_state = std::move(other.m_state);
    m_link = std::exchange(other.m_link, -1);
  }
  return *this;
}

ChildProcess::~ChildProcess() { close_link(); }

pid_t ChildProcess::pid() const noexcept { return m_state ? m_state->pid : -1; }

int ChildProcess::release_link() noexcept { return std::exchange(m_link, -1); }

void ChildProcess::close_link() noexcept {
  if (m_link >= 0) ::close(std::exchange(m_link, -1));
}

bool ChildProcess::kill(int signal) const {
  if (!m_state) return false;
  std::lock_guard lock(m_state->mutex);
  // NOTE: the reaper reaps under this mutex, so the pid cannot be recycled while we signal it;
  // the pidfd makes that doubly sure.
  if (m_state->exit) return false;
  if (m_state->pidfd >= 0) return pidfd_send_signal(m_state->pidfd, signal) == 0;
  return ::kill(m_state->pid, signal) == 0;
}

bool ChildProcess::running() const {
  if (!m_state) return false;
  std::lock_guard lock(m_state->mutex);
  return !m_state->exit;
}

std::optional<ExitInfo> ChildProcess::exit_info() const {
  if (!m_state) return std::nullopt;
  std::lock_guard lock(m_state->mutex);
  return m_state->exit;
}

ExitInfo ChildProcess::wait() const {
  if (!m_state) throw std::logic_error("scale: wait() on an empty ChildProcess");
  std::unique_lock lock(m_state->mutex);
  m_state->reaped_cv.wait(lock, [&] { return m_state->exit.has_value(); });
  return *m_state->exit;
}

std::optional<ExitInfo> ChildProcess::wait_for(std::chrono::milliseconds timeout) const {
  if (!m_state) throw std::logic_error("scale: wait_for() on an empty ChildProcess");
  std::unique_lock lock(m_state->mutex);
  m_state->reaped_cv.wait_for(lock, timeout, [&] { return m_state->exit.has_value(); });
  return m_state->exit;
}

// ----- the child between clone and execve ---------------------------------------------------

namespace {

/// Everything the child needs, prepared by the parent: between clone and execve the child runs
/// on a stack of its own in the parent's memory, so it may only make system calls.
struct ChildArgs {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  int devnull = -1;
  int link = -1;
  int inherited = -1;  // SpawnOptions::inherited_fd, moved above fd 4; -1 for none
  pid_t parent_pid = 0;
  bool own_process_group = false;
  // Written by the child when it fails; read by the parent once clone returns (CLONE_VFORK: the
  // parent's thread resumes only once the child has exec'd or exited, so no atomics are needed).
  volatile int error = 0;
  const char* volatile stage = nullptr;
};

// NOTE: the child makes its system calls through syscall(2), never the libc wrappers, and
// child_main is not instrumented by ThreadSanitizer: a sanitizer intercepts those wrappers
// (sigaction, dup2, close, _exit, ...) and would update its own state, its table of descriptors
// and of signal handlers, from a child that shares the parent's memory, as if the spawner thread
// had made the calls (TSan then reported races on every descriptor a child had touched).
#if defined(__SANITIZE_THREAD__)
#define SCALE_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SCALE_THREAD_SANITIZER 1
#endif
#endif
#ifdef SCALE_THREAD_SANITIZER
#define SCALE_CHILD_NOT_INSTRUMENTED __attribute__((no_sanitize("thread")))
#else
#define SCALE_CHILD_NOT_INSTRUMENTED
#endif

using CloneFunction = int (*)(int (*)(void*), void*, int, void*, ...);

/// clone(2) as libc has it. ThreadSanitizer intercepts clone and takes it for a fork: it resets
/// its own state in the child, which with CLONE_VM is the parent's, and then loses track of what
/// the spawner thread did (every descriptor and block it touched was reported as a race). Under
/// TSan the child is started through libc's own clone, which TSan does not see at all.
CloneFunction libc_clone() {
#ifdef SCALE_THREAD_SANITIZER
  static const CloneFunction found = [] {
    void* libc = ::dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    void* symbol = libc ? ::dlsym(libc, "clone") : nullptr;
    return symbol ? reinterpret_cast<CloneFunction>(symbol) : &::clone;
  }();
  return found;
#else
  return &::clone;
#endif
}

/// The kernel's own sigaction (handler, flags, restorer, mask), which rt_sigaction takes.
struct KernelSigaction {
  void (*handler)(int) = nullptr;
  unsigned long flags = 0;
  void (*restorer)() = nullptr;
  unsigned long mask = 0;
};
/// The size of the kernel's signal set (64 signals), which rt_sigaction and rt_sigprocmask take.
constexpr unsigned long kernel_sigset_size = sizeof(unsigned long);

[[noreturn]] SCALE_CHILD_NOT_INSTRUMENTED void child_fail(ChildArgs* args, const char* stage) {
  args->stage = stage;
  args->error = errno ? errno : EINVAL;
  ::syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

SCALE_CHILD_NOT_INSTRUMENTED int child_main(void* raw) {
  auto* args = static_cast<ChildArgs*>(raw);

  // Dispositions first (a signal that arrives once the mask is emptied meets SIG_DFL), then the
  // mask. Handled signals would be reset by execve anyway; ignored ones would not.
  KernelSigaction default_action;
  default_action.handler = SIG_DFL;
  for (int signal = 1; signal < NSIG; ++signal) {
    if (signal == SIGKILL || signal == SIGSTOP) continue;
    ::syscall(SYS_rt_sigaction, signal, &default_action, nullptr, kernel_sigset_size);  // some refuse: harmless
  }

  if (::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) child_fail(args, "prctl(PR_SET_PDEATHSIG)");
  // The parent may have died before the prctl took effect; then nobody would kill us.
  if (static_cast<pid_t>(::syscall(SYS_getppid)) != args->parent_pid) ::syscall(SYS_exit_group, 126);

  if (args->own_process_group && ::syscall(SYS_setpgid, 0, 0) != 0) child_fail(args, "setpgid");
  // dup3 with no flags is dup2 for two different descriptors (both were moved above fd 3).
  if (::syscall(SYS_dup3, args->devnull, STDIN_FILENO, 0) < 0) child_fail(args, "dup2(/dev/null, 0)");
  if (::syscall(SYS_dup3, args->link, child_link_fd_number, 0) < 0) child_fail(args, "dup2(link, 3)");
  if (args->inherited >= 0 && ::syscall(SYS_dup3, args->inherited, child_inherited_fd_number, 0) < 0)
    child_fail(args, "dup2(inherited descriptor, 4)");
  // Nothing else crosses into the new program, whatever the rest of the parent left open.
  const unsigned first_closed = args->inherited >= 0 ? child_inherited_fd_number + 1 : child_link_fd_number + 1;
  ::syscall(SYS_close_range, first_closed, ~0U, 0);  // ENOSYS on old kernels: fall back on O_CLOEXEC

  const unsigned long empty = 0;
  if (::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, nullptr, kernel_sigset_size) != 0)
    child_fail(args, "sigprocmask");

  ::syscall(SYS_execve, args->path, args->argv, args->envp);
  child_fail(args, "execve");
}

}  // namespace

// ----- the spawner --------------------------------------------------------------------------

class ProcessSpawnerImpl {
 public:
  ProcessSpawnerImpl() {
    m_wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m_wake < 0) throw_errno("eventfd");
    // The thread blocks every signal: process-directed signals go to the program's own threads,
    // and no handler can run on the thread while a child shares its memory.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      m_thread = std::thread([this] { run(); });
    } catch (...) {
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      ::close(m_wake);
      throw;
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }

  ~ProcessSpawnerImpl() {
    {
      std::lock_guard lock(m_mutex);
      m_stopping = true;
    }
    wake();
    m_thread.join();
    ::close(m_wake);
  }

  bool on_thread() const noexcept { return std::this_thread::get_id() == m_thread_id.load(); }

  std::size_t running() const {
    std::lock_guard lock(m_mutex);
    return m_running;
  }

  void post(SpawnOptions options, ProcessSpawner::SpawnCallback done) {
    {
      std::lock_guard lock(m_mutex);
      if (!m_stopping) {
        m_requests.push_back(Request{std::move(options), std::move(done)});
        wake();
        return;
      }
    }
    done(ChildProcess(), std::make_exception_ptr(stopping_error()));
  }

  /// Only on the spawner thread.
  ChildProcess spawn_here(SpawnOptions& options);

 private:
  struct Request {
    SpawnOptions options;
    ProcessSpawner::SpawnCallback done;
  };

  void wake() noexcept {
    std::uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(m_wake, &one, sizeof one);
  }

  static Error stopping_error() {
    return Error("scale: the process spawner is shutting down; no more child processes can be started");
  }
  void run();
  void fail_requests();
  bool try_reap(const std::shared_ptr<ChildState>& child, bool block);
  void serve_requests();

  std::thread m_thread;
  std::atomic<std::thread::id> m_thread_id{};
  int m_wake = -1;
  mutable std::mutex m_mutex;
  std::deque<Request> m_requests;  // guarded by m_mutex
  bool m_stopping = false;         // guarded by m_mutex
  std::size_t m_running = 0;       // guarded by m_mutex
  // Only the spawner thread touches these.
  std::vector<std::shared_ptr<ChildState>> m_children;
  std::unique_ptr<char[]> m_stack;
};

namespace {
constexpr std::size_t child_stack_size = 256 * 1024;
}

ChildProcess ProcessSpawnerImpl::spawn_here(SpawnOptions& options) {
  {
    std::lock_guard lock(m_mutex);
    if (m_stopping) throw stopping_error();
  }
  if (!m_stack) m_stack = std::make_unique_for_overwrite<char[]>(child_stack_size);

  std::vector<std::string> arguments = options.arguments;
  if (arguments.empty()) arguments.push_back(options.executable);
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);

  const pid_t parent_pid = ::getpid();
  std::vector<std::string> extra = options.extra_environment;
  extra.push_back(std::string(link_fd_env) + "=" + std::to_string(child_link_fd_number));
  extra.push_back(std::string(parent_pid_env) + "=" + std::to_string(parent_pid));
  std::vector<char*> envp;
  for (char** entry = environ; entry && *entry; ++entry) {
    bool replaced = false;
    for (auto& added : extra) replaced = replaced || starts_with_name(*entry, name_of(added));
    if (!replaced) envp.push_back(*entry);
  }
  for (auto& added : extra) envp.push_back(added.data());
  envp.push_back(nullptr);

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) throw_errno("socketpair");
  int parent_end = pair[0];
  int child_end = -1;
  int devnull = -1;
  int inherited = -1;
  try {
    child_end = move_high(pair[1]);
    pair[1] = -1;
    int opened = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (opened < 0) throw_errno("open(/dev/null)");
    devnull = move_high(opened);
    if (options.inherited_fd >= 0) {
      // A copy of our own above fd 10, so that arranging fds 0, 3 and 4 never overwrites it.
      inherited = ::fcntl(options.inherited_fd, F_DUPFD_CLOEXEC, 10);
      if (inherited < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC) of the inherited descriptor");
    }
  } catch (...) {
    for (int fd : {parent_end, pair[1], child_end, devnull})
      if (fd >= 0) ::close(fd);
    throw;
  }

  ChildArgs args;
  args.path = options.executable.c_str();
  args.argv = argv.data();
  args.envp = envp.data();
  args.devnull = devnull;
  args.link = child_end;
  args.inherited = inherited;
  args.parent_pid = parent_pid;
  args.own_process_group = options.own_process_group;

  // The stack grows down on every architecture Linux runs this code on; keep the top 16-aligned.
  auto top = reinterpret_cast<std::uintptr_t>(m_stack.get() + child_stack_size) & ~std::uintptr_t{15};
  pid_t pid = libc_clone()(child_main, reinterpret_cast<void*>(top), CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  int clone_error = errno;
  // At once: a second Ctrl-C on another thread kills every remembered child (child_registry.hpp).
  if (pid > 0) remember_child(pid);
  ::close(child_end);
  ::close(devnull);
  if (inherited >= 0) ::close(inherited);

  if (pid < 0) {
    ::close(parent_end);
    throw_errno("clone (starting '" + options.executable + "')", clone_error);
  }
  if (int error = args.error; error != 0) {
    // The child never became the new program; it has exited already.
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    forget_child(pid);
    ::close(parent_end);
    const char* stage = args.stage;
    throw Error("scale: cannot start a worker process from '" + options.executable + "': " + (stage ? stage : "setup") +
                " failed: " + errno_text(error));
  }

  auto state = std::make_shared<ChildState>();
  state->pid = pid;
  state->on_exit = std::move(options.on_exit);
  state->pidfd = pidfd_open(pid);  // -1 on kernels before 5.3: the reaper then polls
  m_children.push_back(state);
  {
    std::lock_guard lock(m_mutex);
    ++m_running;
  }
  return ChildProcess(std::move(state), parent_end);
}

bool ProcessSpawnerImpl::try_reap(const std::shared_ptr<ChildState>& child, bool block) {
  ExitInfo info;
  {
    std::lock_guard lock(child->mutex);
    if (child->exit) return true;
    int status = 0;
    pid_t result;
    do {
      result = ::waitpid(child->pid, &status, block ? 0 : WNOHANG);
    } while (result < 0 && errno == EINTR);
    if (result == 0) return false;
    if (result == child->pid) {
      info = make_exit_info(child->pid, status);
    } else {  // ECHILD: SIGCHLD set to SIG_IGN, or other code reaped it
      info.pid = child->pid;
    }
    {
      // NOTE: counted before the exit is visible, so whoever sees the exit (wait(), on_exit)
      // also sees running() without this child. Lock order: child->mutex, then m_mutex.
      std::lock_guard count_lock(m_mutex);
      --m_running;
    }
    child->exit = info;
    if (child->pidfd >= 0) ::close(std::exchange(child->pidfd, -1));
    // NOTE: right after the reap; only in the few instructions between could a second Ctrl-C
    // signal the pid after the kernel gave it to another process.
    forget_child(child->pid);
  }
  child->reaped_cv.notify_all();
  if (auto on_exit = std::move(child->on_exit)) {
    try {
      on_exit(info);
    } catch (const std::exception& e) {
      log_error(std::string("a child process's on_exit callback threw: ") + e.what());
    } catch (...) {
      log_error("a child process's on_exit callback threw a non-standard exception");
    }
  }
  return true;
}

void ProcessSpawnerImpl::serve_requests() {
  for (;;) {
    Request request;
    {
      std::lock_guard lock(m_mutex);
      if (m_requests.empty()) return;
      request = std::move(m_requests.front());
      m_requests.pop_front();
    }
    ChildProcess child;
    std::exception_ptr error;
    try {
      child = spawn_here(request.options);
    } catch (...) {
      error = std::current_exception();
    }
    try {
      request.done(std::move(child), error);
    } catch (...) {
      log_error("a spawn_async callback threw; its exception is dropped");
    }
  }
}

void ProcessSpawnerImpl::fail_requests() {
  std::deque<Request> requests;
  {
    std::lock_guard lock(m_mutex);
    requests.swap(m_requests);
  }
  for (auto& request : requests) {
    try {
      request.done(ChildProcess(), std::make_exception_ptr(stopping_error()));
    } catch (...) {
      log_error("a spawn_async callback threw; its exception is dropped");
    }
  }
}

void ProcessSpawnerImpl::run() {
  m_thread_id.store(std::this_thread::get_id());
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({m_wake, POLLIN, 0});
    bool polling = false;
    for (auto& child : m_children) {
      fds.push_back({child->pidfd, POLLIN, 0});  // a negative fd is skipped by poll
      polling = polling || child->pidfd < 0;
    }
    int ready = ::poll(fds.data(), fds.size(), polling ? 50 : -1);
    if (ready < 0 && errno != EINTR) log_error(std::string("process spawner: poll failed: ") + errno_text(errno));

    if (fds[0].revents & POLLIN) {
      std::uint64_t count;
      [[maybe_unused]] auto read = ::read(m_wake, &count, sizeof count);
    }
    // Reap before spawning: an on_exit callback may ask for a replacement.
    std::vector<std::shared_ptr<ChildState>> exited;
    for (std::size_t i = 0; i < m_children.size(); ++i) {
      if (m_children[i]->pidfd < 0 || (i + 1 < fds.size() && fds[i + 1].revents != 0)) exited.push_back(m_children[i]);
    }
    for (auto& child : exited) {
      if (try_reap(child, false)) std::erase(m_children, child);
    }
    serve_requests();

    bool stopping;
    {
      std::lock_guard lock(m_mutex);
      stopping = m_stopping;
    }
    if (stopping) break;
  }

  // Shutting down: no child outlives its spawner (PR_SET_PDEATHSIG would kill them as this
  // thread exits anyway); kill and reap each, so none is left a zombie.
  fail_requests();
  while (!m_children.empty()) {
    auto children = std::move(m_children);
    m_children.clear();
    for (auto& child : children) {
      {
        std::lock_guard lock(child->mutex);
        if (!child->exit) {
          if (child->pidfd >= 0)
            pidfd_send_signal(child->pidfd, SIGKILL);
          else
            ::kill(child->pid, SIGKILL);
        }
      }
      try_reap(child, true);
    }
  }
}

ProcessSpawner::ProcessSpawner() : m_impl(std::make_unique<ProcessSpawnerImpl>()) {}
ProcessSpawner::~ProcessSpawner() = default;

ChildProcess ProcessSpawner::spawn(SpawnOptions options) {
  if (m_impl->on_thread()) return m_impl->spawn_here(options);
  // NOTE: a scale::Promise, not std::promise: std::future waits on a futex inside libstdc++,
  // where ThreadSanitizer cannot see the hand-over, and reported races on every child it spawned.
  Promise<ChildProcess> promise;
  Future<ChildProcess> result = promise.get_future();
  m_impl->post(std::move(options), [&promise](ChildProcess child, std::exception_ptr error) {
    if (error)
      promise.set_exception(error);
    else
      promise.set_value(std::move(child));
  });
  return result.get();
}

void ProcessSpawner::spawn_async(SpawnOptions options, SpawnCallback done) {
  m_impl->post(std::move(options), std::move(done));
}

std::size_t ProcessSpawner::running() const { return m_impl->running(); }

bool ProcessSpawner::on_spawner_thread() const noexcept { return m_impl->on_thread(); }

// ----- in the child -------------------------------------------------------------------------

std::optional<ChildLink> child_link() {
  static const std::optional<ChildLink> link = []() -> std::optional<ChildLink> {
    const char* fd_text = std::getenv(link_fd_env);
    const char* parent_text = std::getenv(parent_pid_env);
    if (!fd_text || !parent_text) return std::nullopt;
    char* end = nullptr;
    long fd = std::strtol(fd_text, &end, 10);
    bool fd_ok = *fd_text && *end == '\0' && fd >= 0 && fd < 1 << 20;
    long parent = std::strtol(parent_text, &end, 10);
    bool parent_ok = *parent_text && *end == '\0' && parent > 0;
    ::unsetenv(link_fd_env);
    ::unsetenv(parent_pid_env);
    if (!fd_ok || !parent_ok) return std::nullopt;
    struct stat info;
    if (::fstat(static_cast<int>(fd), &info) != 0 || !S_ISSOCK(info.st_mode)) {
      log_error("SCALE_LINK_FD names a descriptor that is not a socket; not running as a child process");
      return std::nullopt;
    }
    // The child's own children must not hold its link open.
    ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
    return ChildLink{static_cast<int>(fd), static_cast<pid_t>(parent)};
  }();
  return link;
}

bool parent_gone(const ChildLink& link) {
  if (::getppid() != link.parent_pid) return true;
  char byte;
  ssize_t got;
  do {
    got = ::recv(link.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  if (got == 0) return true;
  return got < 0 && errno != EAGAIN && errno != EWOULDBLOCK;
}

// ----- both sides ---------------------------------------------------------------------------

bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent >= 0) {
      bytes.remove_prefix(static_cast<std::size_t>(sent));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pollfd writable{fd, POLLOUT, 0};
      if (::poll(&writable, 1, -1) < 0 && errno != EINTR) return false;
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace scale::detail
