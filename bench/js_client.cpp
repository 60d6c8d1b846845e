// scale.js from Node against the C++ client (scale::SharedMemory("http://...")), on one
// scale-store this program starts on a free loopback port (stopped by its pid at the end), in the
// same run: get and set ops/s with 1 and with 50 requests in flight at once.
//
// Load: closed loops (each finished request starts the next) on one key holding a 16-byte JSON
// string, SCALE_BENCH_SECONDS (default 2) per figure after a short warm-up, the two clients
// taking turns figure by figure. scale.js (bench/js/ops.mjs): `concurrency` async loops in one
// Node process, each awaiting memory.get or memory.set (set(key, value) is a PUT; Node's fetch
// opens a connection per request in flight). The C++ client, in the two ways a program has 50
// requests in flight: 50 Futures outstanding from one thread (one thread's requests keep their
// order, so they share one pipelined connection) and 50 threads each waiting on its own (the
// client spreads them over up to 4 connections); the better is compared, both are printed.
// (set(key, value) of the C++ client is a POST /v1/kv of one key.) Two reference lines without
// scale.js say how much of its figure is Node's: the same GET by Node's fetch (what scale.js
// uses) and by node:http. Clients and store share this machine's cores. Figures are reported,
// never asserted; there are no targets.
//
//   make bench        (or: build/bench/js_client)

#include <scale/runtime.hpp>
#include <scale/shared_memory.hpp>

#include "support/node_script.hpp"
#include "support/store_process.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

const std::string key = "bench-key";
const json value = "vvvvvvvvvvvvvv";  // 16 bytes as JSON

/// The benchmark's seconds per load run: SCALE_BENCH_SECONDS (1 to 60), else `fallback`.
int seconds_per_run(int fallback) {
  const char* text = std::getenv("SCALE_BENCH_SECONDS");
  if (!text || !*text) return fallback;
  const int seconds = std::atoi(text);
  return seconds < 1 ? 1 : seconds > 60 ? 60 : seconds;
}

/// One request of `op` ("get" or "set"); get checks what it read.
void once(const scale::SharedMemory& memory, const std::string& op) {
  if (op == "set") {
    memory.set(key, value).get();
  } else if (memory.get<json>(key).get() != value) {
    throw std::runtime_error("get read another value than was set");
  }
}

/// ops/s of `in_flight` Futures made by `start()` kept outstanding from this one thread for
/// `seconds`; `check` looks at each value.
template <class Start, class Check>
double outstanding(Start start, Check check, int in_flight, double seconds) {
  std::deque<decltype(start())> pending;
  long ops = 0;
  const auto begun = Clock::now();
  const auto deadline = begun + std::chrono::duration<double>(seconds);
  for (int i = 0; i < in_flight; ++i) pending.push_back(start());
  while (!pending.empty()) {
    check(pending.front().get());
    pending.pop_front();
    ++ops;
    if (Clock::now() < deadline) pending.push_back(start());
  }
  return static_cast<double>(ops) / std::chrono::duration<double>(Clock::now() - begun).count();
}

double one_thread(const scale::SharedMemory& memory, const std::string& op, int in_flight, double seconds) {
  if (op == "set")
    return outstanding([&] { return memory.set(key, value); }, [](scale::Revision) {}, in_flight, seconds);
  return outstanding(
      [&] { return memory.get<json>(key); },
      [](const json& read) {
        if (read != value) throw std::runtime_error("get read another value than was set");
      },
      in_flight, seconds);
}

/// ops/s of `threads` threads, each in a closed loop of one request at a time, for `seconds`.
double many_threads(const scale::SharedMemory& memory, const std::string& op, int threads, double seconds) {
  std::atomic<long> ops{0};
  std::atomic<bool> failed{false};
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> running;
  for (int t = 0; t < threads; ++t)
    running.emplace_back([&] {
      try {
        while (Clock::now() < deadline) {
          once(memory, op);
          ops.fetch_add(1, std::memory_order_relaxed);
        }
      } catch (const std::exception& error) {
        std::fprintf(stderr, "js_client: a C++ %s failed: %s\n", op.c_str(), error.what());
        failed = true;
      }
    });
  for (auto& thread : running) thread.join();
  if (failed) throw std::runtime_error("the C++ client failed");
  return static_cast<double>(ops) / std::chrono::duration<double>(Clock::now() - start).count();
}

/// scale.js's ops/s, or nothing (node said why on stderr).
std::optional<double> node_rate(const std::string& url, const std::string& op, int concurrency, int seconds) {
  bench::NodeScript node("ops.mjs", {url, op, std::to_string(concurrency), std::to_string(seconds)});
  std::optional<std::string> line = node.line();
  const int status = node.wait();
  if (!line || status != 0) return std::nullopt;
  return json::parse(*line).at("rate").get<double>();
}

void figure(const std::string& what, double js, double cpp, const std::string& note) {
  std::printf("%-30s %12.0f %12.0f %8.2fx   (none)  %s\n", what.c_str(), js, cpp, js / cpp, note.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);
  if (bench::NodeScript::node_path().empty()) {
    std::printf("js_client: skipped, node is not installed (make deps installs nodejs)\n");
    return 0;
  }
  const int seconds = seconds_per_run(2);
  try {
    bench::StoreProcess store;
    scale::SharedMemory memory(store.url());
    memory.set(key, value).get();
    std::printf(
        "js_client: scale.js (node %s) and the C++ client against one scale-store (%s), loopback,\n"
        "started here. Closed loops on one key (16-byte value), %d s per figure, the clients taking turns.\n"
        "C++ at 50: the better of 50 Futures from one thread and 50 threads (both in the note).\n"
        "Clients and store share this machine's %u cores.\n\n",
        bench::NodeScript::version().c_str(), SCALE_STORE_BINARY, seconds, std::thread::hardware_concurrency());
    std::printf("%-30s %12s %12s %9s   %s\n", "measure", "scale.js", "C++ client", "ratio", "target");
    for (const std::string op : {"get", "set"}) {
      for (int concurrency : {1, 50}) {
        one_thread(memory, op, concurrency, 0.3);  // warm: connections open
        const std::optional<double> js = node_rate(store.url(), op, concurrency, seconds);
        if (!js) {
          std::printf("js_client: FAILED: node ops.mjs %s %d failed (see above)\n", op.c_str(), concurrency);
          return 1;
        }
        const std::string what = op + " ops/s, " + std::to_string(concurrency) + " in flight";
        if (concurrency == 1) {
          figure(what, *js, one_thread(memory, op, 1, seconds), "");
        } else {
          const double futures = one_thread(memory, op, concurrency, seconds);
          const double threads = many_threads(memory, op, concurrency, seconds);
          char note[128];
          std::snprintf(note, sizeof note, "C++: %.0f one thread, %.0f 50 threads", futures, threads);
          figure(what, *js, std::max(futures, threads), note);
        }
      }
    }
    std::printf("references in Node, without scale.js (get):\n");
    for (const std::string way : {"fetch", "http"})
      for (int concurrency : {1, 50}) {
        const std::optional<double> rate = node_rate(store.url(), way, concurrency, seconds);
        const std::string what = "  " + std::string(way == "fetch" ? "bare fetch" : "node:http") + ", " +
                                 std::to_string(concurrency) + " in flight";
        if (rate)
          std::printf("%-30s %12.0f\n", what.c_str(), *rate);
        else
          std::printf("%-30s failed (see above)\n", what.c_str());
        std::fflush(stdout);
      }
  } catch (const std::exception& error) {
    std::printf("js_client: FAILED: %s\n", error.what());
    return 1;
  }
  return 0;
}
