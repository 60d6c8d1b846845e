// The application's stop and the SIGINT/SIGTERM handlers (core/application_stop.hpp).

#include "core/application_stop.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

#include "process/child_registry.hpp"
#include <scale/detail/loop.hpp>

namespace scale::detail {

namespace {

std::mutex g_stop_mutex;
std::stop_source& stop_source_locked() {
  static std::stop_source* source = new std::stop_source;  // never destroyed: tokens may outlive main
  return *source;
}

constexpr int handled_signals[] = {SIGINT, SIGTERM};
std::atomic<int> g_signals_seen{0};
int g_pipe[2] = {-1, -1};

void on_signal(int signal) {
  if (g_signals_seen.fetch_add(1) == 0) {
    const int saved = errno;
    const char byte = static_cast<char>(signal);
    [[maybe_unused]] ssize_t n = ::write(g_pipe[1], &byte, 1);
    errno = saved;
    return;
  }
  // A second signal: no child outlives us, then the signal's own default action.
  kill_remembered_children();
  ::signal(signal, SIG_DFL);
  ::raise(signal);
}

}  // namespace

void reset_application_stop() {
  std::lock_guard lock(g_stop_mutex);
  stop_source_locked() = std::stop_source();
}

void request_application_stop() {
  std::stop_source source;
  {
    std::lock_guard lock(g_stop_mutex);
    source = stop_source_locked();
  }
  source.request_stop();  // outside the lock: the callbacks run here
}

bool application_stop_requested() noexcept {
  std::lock_guard lock(g_stop_mutex);
  return stop_source_locked().stop_requested();
}

std::stop_token application_stop_token() noexcept {
  std::lock_guard lock(g_stop_mutex);
  return stop_source_locked().get_token();
}

namespace {

struct SignalState {
  struct sigaction previous[std::size(handled_signals)];
  std::thread watcher;
};
std::unique_ptr<SignalState> g_state;

}  // namespace

SignalHandling::SignalHandling() {
  if (::pipe2(g_pipe, O_CLOEXEC) != 0) {
    log_error(std::string("could not install SIGINT/SIGTERM handling (pipe: ") + std::strerror(errno) + ")");
    return;
  }
  g_signals_seen.store(0);
  g_state = std::make_unique<SignalState>();
  const int read_end = g_pipe[0];
  g_state->watcher = std::thread([read_end] {
    for (;;) {
      char byte = 0;
      const ssize_t n = ::read(read_end, &byte, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || byte == 0) return;  // 0: the Runtime is going
      const char* abbrev = ::sigabbrev_np(byte);
      log_error((abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(byte)) +
                ": stopping the running calls (they fail with scale::Cancelled); send it again to exit now");
      request_application_stop();
    }
  });
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (std::size_t i = 0; i < std::size(handled_signals); ++i)
    ::sigaction(handled_signals[i], &action, &g_state->previous[i]);
}

SignalHandling::~SignalHandling() {
  if (!g_state) return;
  for (std::size_t i = 0; i < std::size(handled_signals); ++i)
    ::sigaction(handled_signals[i], &g_state->previous[i], nullptr);
  const char stop = 0;
  [[maybe_unused]] ssize_t n = ::write(g_pipe[1], &stop, 1);
  g_state->watcher.join();
  g_state.reset();
  ::close(g_pipe[0]);
  ::close(g_pipe[1]);
  g_pipe[0] = g_pipe[1] = -1;
}

}  // namespace scale::detail
