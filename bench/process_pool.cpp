// ProcessPoolManager against its peers, measured in the same run:
//   - a map of 1,000,000 trivial items with automatic chunks vs Python's multiprocessing.Pool(2).map
//     (default chunksize),
//   - 20,000 items with chunk size 1 vs Pool(2).map(chunksize=1),
//   - a one-item map's round trip vs a raw socketpair round trip between two processes.
// Both pools have two workers. Targets (reported, not asserted): >= 3x Python's items/s with
// automatic chunks, >= 5x with chunk size 1, one-item round trip <= 1.5x the raw socketpair's.
// Every line is recorded in results.json (bench/support/results.hpp), and so is a sweep for the
// plot: 20,000 items at chunk sizes 1, 2, 4, ..., 1024, on both pools.
//
//   make bench        (or: build/bench/process_pool)

#include <scale/iterator.hpp>
#include <scale/managers/process_pool.hpp>
#include <scale/runtime.hpp>

#include "support/results.hpp"

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

constexpr int sweep_items = 20'000;
constexpr int sweep_largest_chunk = 1024;

/// Python's figures: items/s with default chunks, items/s with chunksize=1, and items/s of
/// sweep_items at each chunk size 1, 2, 4, ... (empty when python3 is missing).
struct PythonFigures {
  double automatic = -1, one = -1;
  std::vector<std::pair<int, double>> sweep;
};

PythonFigures python_pool() {
  const std::string script = "import multiprocessing as mp, time\n"
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
                             "        print(best1, best2)\n"
                             "        c = 1\n"
                             "        while c <= " + std::to_string(sweep_largest_chunk) + ":\n"
                             "            n = " + std::to_string(sweep_items) + "; t = time.perf_counter(); "
                             "p.map(f, range(n), chunksize=c); print(c, n / (time.perf_counter() - t))\n"
                             "            c *= 2\n";
  std::string command = "python3 -c \"$(cat <<'PY'\n" + script + "PY\n)\"";
  PythonFigures figures;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return figures;
  if (std::fscanf(pipe, "%lf %lf", &figures.automatic, &figures.one) != 2) figures.automatic = figures.one = -1;
  int chunk = 0;
  double rate = 0;
  while (std::fscanf(pipe, "%d %lf", &chunk, &rate) == 2) figures.sweep.emplace_back(chunk, rate);
  ::pclose(pipe);
  return figures;
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

  std::vector<int> sweep_input(sweep_items);
  std::iota(sweep_input.begin(), sweep_input.end(), 0);
  scale::Iterator<int> sweep_items_iterator(sweep_input, manager);
  std::vector<std::pair<int, double>> sweep;
  for (int chunk = 1; chunk <= sweep_largest_chunk; chunk *= 2) {
    scale::RunOptions options;
    options.chunk_size = static_cast<std::size_t>(chunk);
    const auto start = Clock::now();
    auto result = sweep_items_iterator.map(trivial, options).get();
    sweep.emplace_back(chunk, static_cast<double>(result.size()) / seconds_since(start));
  }

  const PythonFigures python = python_pool();
  const double py_auto = python.automatic, py_one = python.one;

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
  std::printf("one-item map round trip            %12.1f us    %12.1f us    %6.1fx  <= 1.5x (raw socketpair)\n",
              map_us, raw_us, map_us / raw_us);

  if (py_auto > 0) {
    scale_bench::record({"process_pool", "1,000,000 items, automatic chunks", "items/s", auto_rate,
                         "Python Pool(2).map", py_auto, ">=", 3.0});
    scale_bench::record({"process_pool", "20,000 items, chunk size 1", "items/s", one_rate,
                         "Python Pool(2).map(chunksize=1)", py_one, ">=", 5.0});
  }
  scale_bench::record(
      {"process_pool", "one-item map round trip", "us", map_us, "raw socketpair round trip", raw_us, "<=", 1.5});
  std::printf("sweep for the plot, %d items: chunk size, scale items/s, python items/s\n", sweep_items);
  for (std::size_t i = 0; i < sweep.size(); ++i) {
    const auto [chunk, rate] = sweep[i];
    const double py = i < python.sweep.size() ? python.sweep[i].second : -1;
    std::printf("  %5d %12.0f %12.0f\n", chunk, rate, py);
    scale_bench::record_point("process_pool_chunk_size", "scale", chunk, rate);
    if (py > 0) scale_bench::record_point("process_pool_chunk_size", "python", chunk, py);
  }
  return 0;
}
