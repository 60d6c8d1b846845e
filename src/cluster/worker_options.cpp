// The values of a cluster worker's flags (cluster/worker_options.hpp).

#include "cluster/worker_options.hpp"

#include <cstdio>
#include <cstdlib>

#include "process/program_arguments.hpp"

namespace scale::detail {

namespace {

constexpr long max_concurrency = 4096;

[[noreturn]] void refuse(const std::string& problem) {
  const std::string text = "scale: " + problem + "\n" + cluster_worker_usage() + "\n";
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(nullptr);
  std::_Exit(2);
}

std::size_t count_of(const char* flag, const std::string& value) {
  char* end = nullptr;
  const long parsed = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || end == value.c_str() || *end != '\0' || parsed < 1 || parsed > max_concurrency)
    refuse(std::string(flag) + " takes a whole number from 1 to " + std::to_string(max_concurrency) + ", not '" +
           value + "'");
  return static_cast<std::size_t>(parsed);
}

}  // namespace

std::string cluster_worker_usage() {
  const std::vector<std::string> arguments = program_arguments();
  const std::string program = arguments.empty() || arguments.front().empty() ? "PROGRAM" : arguments.front();
  return "usage: " + program + " " + cluster_worker_flag + " redis://host:port [" + heartbeat_flag + " MS] [" +
         worker_threads_flag + " N | " + worker_processes_flag + " N]";
}

ClusterWorkerOptions cluster_worker_options(std::string url, int heartbeat_ms,
                                            const std::optional<std::string>& threads,
                                            const std::optional<std::string>& processes) {
  ClusterWorkerOptions options;
  options.url = std::move(url);
  options.heartbeat_ms = heartbeat_ms;
  if (threads && processes)
    refuse(std::string(worker_threads_flag) + " and " + worker_processes_flag +
           " are two ways to run chunks at once; give one of them");
  if (threads) options.concurrency = count_of(worker_threads_flag, *threads);
  if (processes) {
    options.concurrency = count_of(worker_processes_flag, *processes);
    options.processes = true;
  }
  return options;
}

}  // namespace scale::detail
