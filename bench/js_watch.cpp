// A scale.js watch in Node receiving 10,000 changes from one scale-store this program starts on a
// free loopback port (stopped by its pid at the end), written by the C++ client in this program:
//   - phase "s": 10,000 writes of one key each (keys watch/s/<i> = i, 10,000 revisions), 50 in
//     flight from one thread;
//   - phase "b": the same 10,000 changes as 100 writes of 100 keys (watch/b/<i>, 100 revisions of
//     100 changes each), 10 in flight.
// The Node watch (bench/js/watch.mjs, one memory.watch('watch/')) checks that every change
// arrives exactly once, with its value, in revision order; a missing, repeated or wrong change
// fails this benchmark (exit 1) with the first key missed. Each phase ends with a key
// watch/end/<phase> written once every change of it is acknowledged: the watch has them all when
// it sees that one. Figures: changes/s delivered (from the first write to the watch's receipt of
// the end key, both on the Unix clock) beside the changes/s written, and their ratio (1.0: the
// watch keeps up with the writer). Reported, never asserted; no target.
//
//   make bench        (or: build/bench/js_watch [changes, default 10000])

#include <scale/runtime.hpp>
#include <scale/shared_memory.hpp>

#include "support/node_script.hpp"
#include "support/store_process.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <optional>
#include <string>
#include <thread>

namespace {

using nlohmann::json;

double unix_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// Runs `writes` writes made by `start(i)` with `in_flight` outstanding from this thread.
template <class Start>
void write_all(Start start, long writes, int in_flight) {
  std::deque<decltype(start(0L))> pending;
  long next = 0;
  while (next < writes && static_cast<int>(pending.size()) < in_flight) pending.push_back(start(next++));
  while (!pending.empty()) {
    pending.front().get();
    pending.pop_front();
    if (next < writes) pending.push_back(start(next++));
  }
}

struct Phase {
  double write_start_ms = 0;
  double write_end_ms = 0;
};

/// Phase `name`'s writes of `changes` changes in total.
Phase write_phase(const scale::SharedMemory& memory, const std::string& name, long changes) {
  Phase phase;
  phase.write_start_ms = unix_ms();
  if (name == "s") {
    write_all([&](long i) { return memory.set("watch/s/" + std::to_string(i), json(i)); }, changes, 50);
  } else {
    const long per_write = 100;
    write_all(
        [&](long w) {
          json object = json::object();
          for (long i = w * per_write; i < std::min(changes, (w + 1) * per_write); ++i)
            object["watch/b/" + std::to_string(i)] = i;
          return memory.set(std::move(object));
        },
        (changes + per_write - 1) / per_write, 10);
  }
  phase.write_end_ms = unix_ms();
  memory.set("watch/end/" + name, json(true)).get();
  return phase;
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);
  const long changes = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 10'000;
  if (changes < 1) {
    std::fprintf(stderr, "usage: js_watch [changes >= 1, default 10000]\n");
    return 2;
  }
  if (bench::NodeScript::node_path().empty()) {
    std::printf("js_watch: skipped, node is not installed (make deps installs nodejs)\n");
    return 0;
  }
  try {
    // Twice the default history, so the watch could resume within it after a dropped stream.
    bench::StoreProcess store({"--history", std::to_string(std::max(20'000L, 2 * changes + 10))});
    scale::SharedMemory memory(store.url());
    bench::NodeScript node("watch.mjs", {store.url(), std::to_string(changes)});
    if (node.line() != std::optional<std::string>("ready")) {
      std::printf("js_watch: FAILED: the Node watch did not start (see above)\n");
      return 1;
    }
    std::printf(
        "js_watch: one scale.js watch (node %s) receiving %ld changes per phase from one scale-store (%s),\n"
        "written by the C++ client; every change checked once and in order. Client, writer and store\n"
        "share this machine's %u cores.\n\n",
        bench::NodeScript::version().c_str(), changes, SCALE_STORE_BINARY, std::thread::hardware_concurrency());
    std::printf("%-36s %14s %14s %9s   %s\n", "measure", "delivered/s", "written/s", "ratio", "target");
    for (const std::string name : {"s", "b"}) {
      const Phase phase = write_phase(memory, name, changes);
      const std::optional<std::string> line = node.line();
      if (!line) {
        std::printf("js_watch: FAILED: the Node watch ended before the end of phase %s (see above)\n", name.c_str());
        return 1;
      }
      const json seen = json::parse(*line);
      const long missing = seen.at("missing").get<long>();
      const long repeats = seen.at("repeats").get<long>();
      const long wrong = seen.at("wrong").get<long>();
      if (missing != 0 || repeats != 0 || wrong != 0) {
        std::printf(
            "js_watch: FAILED: the Node watch missed %ld of %ld changes (first missing: %s), got %ld twice and "
            "%ld wrong or out of order\n",
            missing, changes, seen.at("first_missing").is_null() ? "none" : seen.at("first_missing").get<std::string>().c_str(),
            repeats, wrong);
        return 1;
      }
      const double last_ms = seen.at("last_ms").get<double>();
      const double delivered = static_cast<double>(changes) / ((last_ms - phase.write_start_ms) / 1000);
      const double written = static_cast<double>(changes) / ((phase.write_end_ms - phase.write_start_ms) / 1000);
      const std::string what = name == "s" ? "changes/s, 1 key per write" : "changes/s, 100 keys per write";
      std::printf("%-36s %14.0f %14.0f %8.2fx   (none)  all %ld once, in order; last %.1f ms after the last write\n",
                  what.c_str(), delivered, written, delivered / written, changes, last_ms - phase.write_end_ms);
      std::fflush(stdout);
    }
    if (node.wait() != 0) {
      std::printf("js_watch: FAILED: the Node watch exited with an error (see above)\n");
      return 1;
    }
  } catch (const std::exception& error) {
    std::printf("js_watch: FAILED: %s\n", error.what());
    return 1;
  }
  return 0;
}
