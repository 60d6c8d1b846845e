#pragma once
// What a benchmark measured, kept for the page and the plot: every program records its figures in
// one file, <build>/bench/results.json (beside the programs, or $SCALE_BENCH_RESULTS), which
// `make bench` then prints as one table (bench/summary.mjs) and plots (bench/plot.sh).
//
// Layout of results.json:
//   {"rows":   {"<bench>/<figure>": {bench, figure, unit, value, peer, peer_value, ratio,
//                                    target_op, target, met, commit?, time}},
//    "series": {"<series>": {"<line>": {"<x>": y, ...}, ...}, ...}}
// A row is a figure of scale beside its peer's figure from the same run; `ratio` is value /
// peer_value and `met` compares it with `target` by `target_op` (">=" or "<="). A series is a set
// of lines of y against x (throughput against connections, against chunk size) for the plot.
// A program that runs again replaces its rows and points; others are kept.

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

namespace scale_bench {

/// One figure of scale beside its peer's, and the ratio's target.
struct Row {
  std::string bench;       ///< the program, e.g. "process_pool"
  std::string figure;      ///< what was measured, e.g. "20,000 items, chunk size 1"
  std::string unit;        ///< "items/s", "us", "ns", "req/s"
  double value = 0;        ///< scale's figure
  std::string peer;        ///< who it is measured against, e.g. "Python Pool(2).map(chunksize=1)"
  double peer_value = 0;   ///< the peer's figure from the same run
  std::string target_op;   ///< ">=" (ratio at least target) or "<=" (at most)
  double target = 0;       ///< the ratio's target
};

/// Where results.json is: $SCALE_BENCH_RESULTS, else beside this program.
inline std::filesystem::path results_path() {
  if (const char* path = std::getenv("SCALE_BENCH_RESULTS"); path && *path) return path;
  std::error_code error;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "results.json";
  return self.parent_path() / "results.json";
}

namespace detail {

inline nlohmann::json load_results() {
  std::ifstream in(results_path());
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) doc = nlohmann::json::object();
  if (!doc.contains("rows") || !doc["rows"].is_object()) doc["rows"] = nlohmann::json::object();
  if (!doc.contains("series") || !doc["series"].is_object()) doc["series"] = nlohmann::json::object();
  return doc;
}

inline void store_results(const nlohmann::json& doc) {
  const auto path = results_path();
  const auto temporary = path.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << doc.dump(1) << '\n';
    if (!out) {
      std::fprintf(stderr, "bench: could not write %s\n", temporary.c_str());
      return;
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) std::fprintf(stderr, "bench: could not write %s: %s\n", path.c_str(), error.message().c_str());
}

}  // namespace detail

/// value / peer_value; 0 when the peer measured nothing.
inline double ratio(const Row& row) { return row.peer_value > 0 ? row.value / row.peer_value : 0.0; }

/// True when the row's ratio meets its target (never when the peer measured nothing).
inline bool met(const Row& row) {
  if (row.peer_value <= 0) return false;
  return row.target_op == "<=" ? ratio(row) <= row.target : ratio(row) >= row.target;
}

/// Records `row` in results.json (replacing an earlier row of the same bench and figure).
inline void record(const Row& row) {
  nlohmann::json doc = detail::load_results();
  nlohmann::json entry = {{"bench", row.bench},         {"figure", row.figure},    {"unit", row.unit},
                          {"value", row.value},         {"peer", row.peer},        {"peer_value", row.peer_value},
                          {"ratio", ratio(row)},             {"target_op", row.target_op}, {"target", row.target},
                          {"met", met(row)},            {"time", static_cast<long long>(std::time(nullptr))}};
  if (const char* commit = std::getenv("SCALE_BENCH_COMMIT"); commit && *commit) entry["commit"] = commit;
  doc["rows"][row.bench + "/" + row.figure] = std::move(entry);
  detail::store_results(doc);
}

/// Records one point (x, y) of `line` in `series`, e.g. ("store_concurrency_get", "redis", 50, 91000).
inline void record_point(const std::string& series, const std::string& line, double x, double y) {
  nlohmann::json doc = detail::load_results();
  char x_text[32];
  std::snprintf(x_text, sizeof x_text, "%g", x);
  doc["series"][series][line][x_text] = y;
  detail::store_results(doc);
}

}  // namespace scale_bench
