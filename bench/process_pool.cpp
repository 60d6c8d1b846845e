// ProcessPoolManager against its peers, measured in the same run:
//   - a map of 1,000,000 trivial items with automatic chunks vs Python's multiprocessing.Pool(2).map
//     (default chunksize),
//   - 20,000 items with chunk size 1 vs Pool(2).map(chunksize=1),
//   - a one-item map's round trip vs a raw socketpair round trip between two processes.
// Both pools have two workers. Targets (reported, not asserted): >= 3x Python's items/s with
// automatic chunks, >= 5x with chunk size 1, one-item round trip <= 3x the raw socketpair's.
//
//   make bench        (or: build/bench/process_pool)

#include <scale/iterator.hpp>
#include <scale/managers/process_pool.hpp>
#include <scale/runtime.hpp>

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto trivial = [](int x) { return x * 3 + 1; };

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// Python's figures: items/s with default chunks, items/s with chunksize=1 (or negative when
/// python3 is missing).
std::pair<double, double> python_pool() {
  const char* script = "import multiprocessing as mp, time\n"
                       "def f(x): return x * 3 + 1\n"
                       "if __name__ == '__main__':\n"
                       "    with mp.Pool(2) as p:\n"
                       "        p.map(f, range(1000))\n"
                       "        best1 = best2 = 0.0\n"
                       "        for _ in range(3):\n"
                       "            n = 1000000; t = time.perf_counter(); p.map(f, range(n)); best1 = max(best1, n / "
                       "(time.perf_counter() - t))\n"
                       "            n = 20000; t = time.perf_counter(); p.map(f, range(n), chunksize=1); best2 = "
                       "max(best2, n / (time.perf_counter() - t))\n"
                       "        print(best1, best2)\n";
  std::string command = "python3 -c \"$(cat <<'PY'\n" + std::string(script) + "PY\n)\"";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return {-1, -1};
  double a = -1, b = -1;
  if (std::fscanf(pipe, "%lf %lf", &a, &b) != 2) a = b = -1;
  ::pclose(pipe);
  return {a, b};
}

/// Mean round trip of 16 bytes between this process and a forked echo child, in microseconds.
double raw_socketpair_round_trip_us() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return -1;
  constexpr int rounds = 20'000;
  const pid_t pid = ::fork();
  if (pid == 0) {
    char buffer[16];
    for (int i = 0; i < rounds; ++i) {
      if (::read(fds[1], buffer, sizeof buffer) != sizeof buffer) break;
      if (::write(fds[1], buffer, sizeof buffer) != sizeof buffer) break;
    }
    ::_exit(0);
  }
  char buffer[16] = {};
  const auto start = Clock::now();
  for (int i = 0; i < rounds; ++i) {
    if (::write(fds[0], buffer, sizeof buffer) != sizeof buffer) break;
    if (::read(fds[0], buffer, sizeof buffer) != sizeof buffer) break;
  }
  const double us = seconds_since(start) * 1e6 / rounds;
  ::close(fds[0]);
  ::close(fds[1]);
  ::waitpid(pid, nullptr, 0);
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // in a worker process: serves tasks, then exits
  scale::ProcessPoolManager manager({.max_workers = 2, .min_workers = 2});

  std::vector<int> million(1'000'000);
  std::iota(million.begin(), million.end(), 0);
  scale::Iterator<int> big(million, manager);
  big.map(trivial).get();  // warm: both workers up
  double auto_rate = 0;
  for (int i = 0; i < 3; ++i) {
    const auto start = Clock::now();
    auto result = big.map(trivial).get();
    auto_rate = std::max(auto_rate, static_cast<double>(result.size()) / seconds_since(start));
  }

  std::vector<int> twenty(20'000);
  std::iota(twenty.begin(), twenty.end(), 0);
  scale::Iterator<int> small(twenty, manager);
  double one_rate = 0;
  for (int i = 0; i < 3; ++i) {
    const auto start = Clock::now();
    scale::RunOptions options;
    options.chunk_size = 1;
    auto result = small.map(trivial, options).get();
    one_rate = std::max(one_rate, static_cast<double>(result.size()) / seconds_since(start));
  }

  // Round trips awaited in a coroutine on the loop, as the canonical program does.
  scale::Iterator<int> one(std::vector<int>{7}, manager);
  constexpr int rounds = 5'000;
  one.map(trivial).get();
  const double map_us = runtime.run([&]() -> scale::Future<double> {
    return [](const scale::Iterator<int>* one) -> scale::Future<double> {
      const auto start = Clock::now();
      for (int i = 0; i < rounds; ++i) {
        scale::Future<std::vector<int>> done = one->map(trivial);
        co_await std::move(done);
      }
      co_return seconds_since(start) * 1e6 / rounds;
    }(&one);
  });
  const double raw_us = raw_socketpair_round_trip_us();
  const auto [py_auto, py_one] = python_pool();

  std::printf("process pool, 2 workers            scale              peer               ratio  target\n");
  if (py_auto > 0) {
    std::printf("1,000,000 items, automatic chunks  %12.0f it/s  %12.0f it/s  %6.1fx  >= 3x\n", auto_rate, py_auto,
                auto_rate / py_auto);
    std::printf("20,000 items, chunk size 1         %12.0f it/s  %12.0f it/s  %6.1fx  >= 5x\n", one_rate, py_one,
                one_rate / py_one);
  } else {
    std::printf("1,000,000 items, automatic chunks  %12.0f it/s  (python3 not found)\n", auto_rate);
    std::printf("20,000 items, chunk size 1         %12.0f it/s  (python3 not found)\n", one_rate);
  }
  std::printf("one-item map round trip            %12.1f us    %12.1f us    %6.1fx  <= 3x (raw socketpair)\n", map_us,
              raw_us, map_us / raw_us);
  return 0;
}
