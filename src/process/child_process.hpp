#pragma once
// Child processes of the same executable, for the process pool: spawning, the link, reaping.
//
// Spawning. A ProcessSpawner owns one long-lived thread, and every child is started on it:
// PR_SET_PDEATHSIG fires when the *thread* that created the child exits, so a child started from
// a short-lived thread would be killed with that thread. The thread starts a child with
// clone(CLONE_VM | CLONE_VFORK) on a stack of its own (what posix_spawn does, without its limits):
// no page tables are copied, and the child runs only system calls before execve, made through
// syscall(2) rather than the libc wrappers, which a sanitizer intercepts and would update its own
// state from (the child shares the parent's memory). In the child,
// before execve of `executable` (default /proc/self/exe, this very program):
//   - every signal disposition is reset to SIG_DFL and the signal mask emptied,
//   - PR_SET_PDEATHSIG(SIGKILL) is set, and the child exits at once if its parent already died,
//   - stdin is /dev/null; stdout and stderr are inherited,
//   - its end of a socketpair(AF_UNIX, SOCK_STREAM) becomes fd 3 (child_link_fd_number), the
//     caller's SpawnOptions::inherited_fd (when given) becomes fd 4 (child_inherited_fd_number),
//     and every other descriptor above 2 is closed (close_range), so siblings never hold each
//     other's links open whatever the rest of the program forgot to mark close-on-exec,
//   - the environment is the parent's `environ` at spawn time plus SCALE_LINK_FD=3 and
//     SCALE_PARENT_PID=<parent pid>, which child_link() reads (and removes) in the child.
// Every descriptor the spawner itself holds (links, pidfds, its eventfd) is close-on-exec.
//
// Reaping. The same thread waits on a pidfd per child and reaps exactly the pids it spawned
// (waitpid(pid), never waitpid(-1), which would steal other code's children). A child is reaped
// even after its ChildProcess handle is dropped; SpawnOptions::on_exit is called once per child,
// on the spawner thread, with its ExitInfo ("exited with status N", "killed by signal SIGKILL
// (9)"). Destroying the spawner kills (SIGKILL) and reaps every child still running, calling
// their on_exit; shut children down gracefully first (close their links, wait for on_exit).
//
// Writes. send_all() writes with MSG_NOSIGNAL: writing to a dead child fails with EPIPE instead
// of raising SIGPIPE, and the process-wide SIGPIPE disposition is left alone.

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <scale/error.hpp>

namespace scale::detail {

/// The descriptor number of the link in a child.
inline constexpr int child_link_fd_number = 3;
/// The descriptor number of SpawnOptions::inherited_fd in a child.
inline constexpr int child_inherited_fd_number = 4;
/// Environment variables a spawned child finds (child_link() removes them).
inline constexpr const char* link_fd_env = "SCALE_LINK_FD";
inline constexpr const char* parent_pid_env = "SCALE_PARENT_PID";

/// How a child ended.
struct ExitInfo {
  pid_t pid = -1;
  bool known = false;    ///< false when the status was lost (someone else reaped the child)
  int raw_status = 0;    ///< waitpid()'s status word
  int exit_status = -1;  ///< the exit status when it exited, else -1
  int signal = 0;        ///< the signal that killed it, else 0
  bool core_dumped = false;

  bool exited() const noexcept { return known && signal == 0; }
  bool signaled() const noexcept { return known && signal != 0; }
  /// "exited with status 3", "killed by signal SIGKILL (9)", "killed by signal SIGABRT (6) (core dumped)".
  std::string describe() const;
};

/// The ExitInfo of a waitpid() status word.
ExitInfo make_exit_info(pid_t pid, int raw_status);

/// "SIGKILL" for 9; "signal 40" for one without a name.
std::string signal_name(int signal);

struct SpawnOptions {
  /// argv, argv[0] first (typically the parent's arguments plus a worker flag). Empty: {executable}.
  std::vector<std::string> arguments;
  std::string executable = "/proc/self/exe";
  /// "NAME=value" entries added to the parent's environment (replacing a variable of the same name).
  std::vector<std::string> extra_environment;
  /// Start the child in a process group of its own, so that a Ctrl-C sent to the terminal's
  /// process group reaches only the parent (which decides what the children do).
  bool own_process_group = false;
  /// A descriptor of the caller's that the child gets as fd 4 (child_inherited_fd_number), e.g.
  /// the process pool's crash record (process/crash_record.hpp); -1 for none. The caller keeps
  /// its own descriptor (and closes it); the spawner duplicates it for the child.
  int inherited_fd = -1;
  /// Called once, on the spawner thread, after the child is reaped. Must not block for long.
  std::function<void(const ExitInfo&)> on_exit;
};

struct ChildState;

/// The parent's handle on one child: its pid, the parent's end of the link, and its exit.
/// Move-only. Dropping it closes the link (the child sees end-of-file); the spawner still reaps
/// the child. Methods may be called from any thread.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(std::shared_ptr<ChildState> state, int link_fd) noexcept;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  bool valid() const noexcept { return static_cast<bool>(m_state); }
  explicit operator bool() const noexcept { return valid(); }

  pid_t pid() const noexcept;
  /// The parent's end of the link: a blocking AF_UNIX stream socket, close-on-exec; -1 once closed.
  int link_fd() const noexcept { return m_link; }
  /// Hands the link descriptor over to the caller, who closes it.
  int release_link() noexcept;
  /// Closes the parent's end of the link.
  void close_link() noexcept;

  /// Sends `signal` to the child (through its pidfd, so never to a recycled pid).
  /// Returns false once the child has been reaped.
  bool kill(int signal = SIGKILL) const;
  /// True until the child has been reaped.
  bool running() const;
  /// How it ended, once reaped.
  std::optional<ExitInfo> exit_info() const;
  /// Blocks until the child is reaped.
  ExitInfo wait() const;
  std::optional<ExitInfo> wait_for(std::chrono::milliseconds timeout) const;

 private:
  std::shared_ptr<ChildState> m_state;
  int m_link = -1;
};

class ProcessSpawnerImpl;

/// Starts and reaps child processes on one long-lived thread of its own (see the file comment).
class ProcessSpawner {
 public:
  ProcessSpawner();
  /// Kills (SIGKILL) and reaps every child still running, calling its on_exit, then stops.
  ~ProcessSpawner();
  ProcessSpawner(const ProcessSpawner&) = delete;
  ProcessSpawner& operator=(const ProcessSpawner&) = delete;

  /// Starts a child and returns once it has been exec'd (about a millisecond). Throws
  /// scale::Error when it cannot start (the message names the executable and the failing call).
  /// May be called from any thread, including from an on_exit callback.
  ChildProcess spawn(SpawnOptions options);

  using SpawnCallback = std::function<void(ChildProcess child, std::exception_ptr error)>;
  /// Starts a child without waiting; `done` runs on the spawner thread with the child, or with
  /// an invalid ChildProcess and the error.
  void spawn_async(SpawnOptions options, SpawnCallback done);

  /// Children spawned and not yet reaped.
  std::size_t running() const;
  /// True on the spawner's own thread (where on_exit and spawn_async callbacks run).
  bool on_spawner_thread() const noexcept;

 private:
  std::unique_ptr<ProcessSpawnerImpl> m_impl;
};

// ----- in the child -------------------------------------------------------------------------

/// What a process started by a ProcessSpawner knows about its parent.
struct ChildLink {
  int fd = -1;           ///< the child's end of the link (fd 3), close-on-exec from now on
  pid_t parent_pid = 0;  ///< the parent's pid at spawn time
};

/// In a process started by a ProcessSpawner: its link; std::nullopt in any other process.
/// The first call takes SCALE_LINK_FD and SCALE_PARENT_PID out of the environment (so the
/// child's own children do not mistake themselves for workers) and marks the link close-on-exec;
/// make it early in main, before other threads start. Later calls return the same answer.
std::optional<ChildLink> child_link();

/// True when the parent is gone: getppid() is no longer the spawn-time parent, or the link
/// reads end-of-file (checked without blocking or consuming data).
bool parent_gone(const ChildLink& link);

// ----- both sides ---------------------------------------------------------------------------

/// Writes all of `bytes` to a socket with MSG_NOSIGNAL (never SIGPIPE), retrying on EINTR and
/// waiting when the socket is non-blocking and full. Returns false when the peer is gone (or any
/// other error); errno tells which.
bool send_all(int fd, std::string_view bytes);

}  // namespace scale::detail
