// A program for the dashboard's browser test (tests/ui/dashboard.test.mjs): it writes keys, emits
// events and runs maps on a process pool that reports to the store as NAME, each when the test
// says so on stdin, so the test decides when anything is written and checks the page against it.
//
//   ui_app URL [NAME]        (URL: the scale-store, "http://127.0.0.1:PORT"; NAME: "ui-test")
//
// Commands, one a line on stdin; each is answered by one line on stdout, flushed, once it is done:
//   set KEY JSON       writes KEY                       -> "ok <revision>"
//   emit NAME JSON     emits NAME with the payload      -> "ok"
//   map N MS           maps N items of MS ms each on the pool (2 workers, one item a chunk, each
//                      item reporting its progress in 5 steps, so the bar moves within items)
//                                                       -> "ok <sum of the items' results>"
//   quit               destroys the pool (its report ends) and exits 0; so does the end of stdin
// A command that fails answers "error: <what>" and the program reads on; a bad command line
// exits 2.

#include <scale/scale.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int exit_usage = 2;

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

/// An item of `ms` milliseconds in five steps, each reported through the scope.
auto slow_item = [](std::vector<int> item, scale::Scope& scope) {
  const int value = item.at(0);
  const int ms = item.at(1);
  for (int step = 1; step <= 5; ++step) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms / 5));
    scope.progress(step / 5.0);
  }
  return value;
};

/// Runs one command line; returns false for "quit".
bool run_command(scale::Runtime& runtime, scale::SharedMemory& memory, scale::SharedEventEmitter& events,
                 scale::ProcessPoolManager& pool, const std::string& line) {
  std::istringstream words(line);
  std::string command;
  words >> command;
  std::string rest;
  std::getline(words >> std::ws, rest);
  if (command == "quit") return false;
  if (command == "set") {
    const std::size_t space = rest.find(' ');
    if (space == std::string::npos) throw std::invalid_argument("set takes KEY JSON, e.g. 'set ui/answer 42'");
    const std::string key = rest.substr(0, space);
    const nlohmann::json value = nlohmann::json::parse(rest.substr(space + 1));
    const scale::SharedMemory::Revision revision = runtime.run([&] { return memory.set(key, value); });
    say("ok " + std::to_string(revision));
  } else if (command == "emit") {
    const std::size_t space = rest.find(' ');
    const std::string name = rest.substr(0, space);
    const nlohmann::json payload = space == std::string::npos ? nlohmann::json(nullptr) : nlohmann::json::parse(rest.substr(space + 1));
    runtime.run([&] { return events.emit(name, payload); });
    say("ok");
  } else if (command == "map") {
    int count = 0;
    int ms = 0;
    std::istringstream numbers(rest);
    if (!(numbers >> count >> ms) || count <= 0 || ms < 0)
      throw std::invalid_argument("map takes N MS (N > 0 items of MS >= 0 ms each), e.g. 'map 20 150'");
    std::vector<std::vector<int>> items;
    for (int i = 1; i <= count; ++i) items.push_back({i, ms});
    scale::Iterator<std::vector<int>> iterator(std::move(items), pool);
    scale::RunOptions options;
    options.chunk_size = 1;
    const std::vector<int> results = runtime.run([&] { return iterator.map(slow_item, options); });
    say("ok " + std::to_string(std::accumulate(results.begin(), results.end(), 0)));
  } else {
    throw std::invalid_argument("unknown command '" + command + "': use set, emit, map or quit");
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // in a worker process: serves tasks and never returns
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: ui_app URL [NAME]  (URL of a scale-store, e.g. http://127.0.0.1:12345)\n");
    return exit_usage;
  }
  const std::string url = argv[1];
  const std::string name = argc == 3 ? argv[2] : "ui-test";
  scale::SharedMemory memory(url);
  scale::SharedEventEmitter events(url);
  scale::ProcessPoolManager pool({.max_workers = 2});
  pool.report_to(memory, name, &events);
  say("ready");
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    try {
      if (!run_command(runtime, memory, events, pool, line)) break;
    } catch (const std::exception& error) {
      say(std::string("error: ") + error.what());
    }
  }
  return 0;
}
