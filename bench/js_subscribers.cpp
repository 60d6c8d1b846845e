// 1,000 concurrent SSE subscribers of one event on one scale-store this program starts on a free
// loopback port (with --max-connections 2048; stopped by its pid at the end), all in one Node
// process (bench/js/subscribers.mjs), each on a stream of its own: GET /v1/stream?event=..., what
// a scale.js client with one `on` opens, read over raw node:net sockets (scale.js shares one stream
// among every subscription of one store in a process, by design, so 1,000 scale.js clients in
// one process would be one subscriber of the store).
//   - memory per subscriber: the store's VmRSS (/proc/<pid>/status) once all are in place (each
//     stream said ": ready", and the store's /metrics counts them) minus before the first, / 1,000;
//   - delivery: one emit (POST /v1/events/..., from the same Node process), the time from just
//     before the request to each subscriber's receipt; p50, p99 and max over the 1,000, for each
//     of 5 rounds (after 3 warm-up emits), and the p99 over all 5,000. Target: p99 <= 50 ms on
//     this machine. A subscriber that misses an emit or gets it twice fails the benchmark.
//     Reported, never asserted; each round also says the CPU the store and node used in it.
// The soft limit on open files is raised to the hard one first (the store and node inherit it).
//
//   make bench        (or: build/bench/js_subscribers [subscribers, default 1000])

#include "support/node_script.hpp"
#include "support/store_process.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

namespace {

using nlohmann::json;

constexpr int rounds = 5;
constexpr double target_p99_ms = 50;

void latency_line(const std::string& what, const json& round) {
  const double p99 = round.at("p99_ms").get<double>();
  std::printf("%-22s %8.1f %8.1f %8.1f %7.2fx   <= %.0f ms: %-6s  emit answered %5.1f ms; CPU: store %5.1f ms, node %5.1f ms\n",
              what.c_str(), round.at("p50_ms").get<double>(), p99, round.at("max_ms").get<double>(), p99 / target_p99_ms,
              target_p99_ms, p99 <= target_p99_ms ? "met" : "MISSED", round.at("emit_ms").get<double>(),
              round.at("store_cpu_ms").get<double>(), round.at("node_cpu_ms").get<double>());
}

}  // namespace

int main(int argc, char** argv) {
  const long subscribers = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 1000;
  if (subscribers < 1 || subscribers > 10'000) {
    std::fprintf(stderr, "usage: js_subscribers [subscribers, 1 to 10000, default 1000]\n");
    return 2;
  }
  if (bench::NodeScript::node_path().empty()) {
    std::printf("js_subscribers: skipped, node is not installed (make deps installs nodejs)\n");
    return 0;
  }
  const rlim_t open_files = bench::raise_open_files_limit();
  if (open_files < static_cast<rlim_t>(subscribers) + 64) {
    std::printf("js_subscribers: skipped, %ld subscribers need %ld open files and the hard limit is %lu "
                "(raise it: ulimit -Hn)\n",
                subscribers, subscribers + 64, static_cast<unsigned long>(open_files));
    return 0;
  }
  try {
    bench::StoreProcess store({"--max-connections", std::to_string(2 * subscribers + 48)});
    std::printf(
        "js_subscribers: %ld SSE subscribers of one event, each its own GET /v1/stream (raw node:net sockets,\n"
        "node %s, one process), on one scale-store (%s);\n"
        "%d rounds of one emit to all, timed from the emit to each receipt. Open files: %lu. Node and store\n"
        "share this machine's %u cores (CPU: what each used during the round).\n\n",
        subscribers, bench::NodeScript::version().c_str(), SCALE_STORE_BINARY, rounds,
        static_cast<unsigned long>(open_files), std::thread::hardware_concurrency());
    bench::NodeScript node("subscribers.mjs",
                           {store.url(), std::to_string(store.pid()), std::to_string(subscribers), std::to_string(rounds)});
    const std::optional<std::string> line = node.line();
    const int status = node.wait();
    if (!line || status != 0) {
      std::printf("js_subscribers: FAILED: node subscribers.mjs failed (see above)\n");
      return 1;
    }
    const json figures = json::parse(*line);
    const long in_store = figures.at("subscribers").get<long>();
    if (in_store != subscribers) {
      std::printf("js_subscribers: FAILED: the store counts %ld subscribers, not %ld\n", in_store, subscribers);
      return 1;
    }
    const double before = figures.at("rss_before").get<double>();
    const double after = figures.at("rss_after").get<double>();
    std::printf("%-22s %8s %8s %8s %8s   %s\n", "store VmRSS, MiB", "before", "after", "KiB/sub", "", "target");
    std::printf("%-22s %8.1f %8.1f %8.1f %8s   (none)\n", "all subscribed", before / 1048576, after / 1048576,
                (after - before) / static_cast<double>(subscribers) / 1024, "");
    std::printf("\n%-22s %8s %8s %8s %8s   %s\n", "delivery to all, ms", "p50", "p99", "max", "ratio", "target");
    int round_number = 1;
    for (const json& round : figures.at("rounds")) latency_line("round " + std::to_string(round_number++), round);
    const json& all = figures.at("all");
    const double p99 = all.at("p99_ms").get<double>();
    std::printf("%-22s %8.1f %8.1f %8.1f %7.2fx   <= %.0f ms: %s\n", "all rounds", all.at("p50_ms").get<double>(),
                p99, all.at("max_ms").get<double>(), p99 / target_p99_ms, target_p99_ms,
                p99 <= target_p99_ms ? "met" : "MISSED");
  } catch (const std::exception& error) {
    std::printf("js_subscribers: FAILED: %s\n", error.what());
    return 1;
  }
  return 0;
}
