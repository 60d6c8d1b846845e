// The values of a cluster worker's flags (cluster/worker_options.hpp).

#include "cluster/worker_options.hpp"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "cluster/keys.hpp"
#include "process/program_arguments.hpp"
#include <scale/error.hpp>

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
         worker_threads_flag + " N | " + worker_processes_flag + " N] [" + worker_provides_flag +
         " name=value,...] [" + worker_site_flag + " NAME]";
}

ClusterWorkerOptions cluster_worker_options(const ClusterWorkerFlags& flags) {
  ClusterWorkerOptions options;
  options.url = flags.url;
  // NOTE: the URL and its options (?namespace=, ?shards=) are checked here, with the usage line,
  // before the worker opens anything.
  try {
    cluster_keys(parse_redis_url(flags.url), cluster_worker_flag);
  } catch (const Error& error) {
    refuse(error.what());
  }
  options.heartbeat_ms = flags.heartbeat_ms;
  if (flags.threads && flags.processes)
    refuse(std::string(worker_threads_flag) + " and " + worker_processes_flag +
           " are two ways to run chunks at once; give one of them");
  if (flags.threads) options.concurrency = count_of(worker_threads_flag, *flags.threads);
  if (flags.processes) {
    options.concurrency = count_of(worker_processes_flag, *flags.processes);
    options.processes = true;
  }
  if (flags.provides) {
    try {
      options.provides = parse_provides(*flags.provides);
    } catch (const std::invalid_argument& error) {
      refuse(std::string(worker_provides_flag) + " " + *flags.provides + ": " + error.what());
    }
  }
  if (flags.site) {
    options.site = *flags.site;
    const auto [at, added] = options.provides.emplace("site", options.site);
    if (!added && at->second != options.site)
      refuse(std::string(worker_site_flag) + " " + options.site + " and " + worker_provides_flag + " site=" +
             at->second + " name two sites; give one");
  }
  return options;
}

}  // namespace scale::detail
