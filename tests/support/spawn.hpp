#pragma once
// A program of the test's own (scale-store, a worker of this executable, say) started as a child
// that dies with the test.

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace support {

/// Starts `program` with `args` (argv[1], ...) and returns its pid (the caller stops it by that
/// pid). `in_child` runs in the child just before exec, to wire its output. The program is killed
/// if the test dies first (a failed REQUIRE, ctest's timeout), so none outlives it holding
/// ctest's output.
template <class InChild>
pid_t spawn(const std::string& program, const std::vector<std::string>& args, InChild in_child) {
  std::vector<char*> argv{const_cast<char*>(program.c_str())};
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // the test died before prctl took effect
    in_child();
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

/// Starts `program` with `args`; its stderr (and its stdout with `stdout_too`) can be read from
/// `log_fd`. Returns the pid, as spawn() does.
inline pid_t spawn_with_log(const char* program, const std::vector<std::string>& args, int& log_fd,
                            bool stdout_too = false) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = -1;
  try {
    pid = spawn(program, args, [&] {
      if (stdout_too) ::dup2(pipe_fds[1], 1);
      ::dup2(pipe_fds[1], 2);
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
    });
  } catch (...) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    throw;
  }
  ::close(pipe_fds[1]);
  log_fd = pipe_fds[0];
  return pid;
}

}  // namespace support
