// The map for clients that cannot run one: a web page or a Node script (js/examples/seed.mjs, the
// canonical program written in JavaScript) writes a job, a JSON array of integers, to `jobs/<id>`
// in a scale-store; this program maps its numbers with the canonical times_multiplier on a
// process pool (each worker reads `multiplier` from the store through its Scope) and writes the
// values to `results/<id>`. The store is the facilitator: neither side opens a port to the other.
// A job that is not an array of integers, or whose map fails, is answered
// {"error": "<message>", "type": "<the C++ error class>"} and the program goes on serving.
// Ctrl-C or SIGTERM: it stops taking jobs, lets running maps end and exits with status 0; a job
// stopped halfway gets no answer and is served again on the next start.
// Run: scale-store --port 12345 &
//      build/examples/08-js-facilitated [URL] &       (URL: else $SCALE_STORE_URL, else localhost:12345)
//      node js/examples/seed.mjs [URL]
#include <scale/scale.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

// The canonical program's worker function, unchanged: it runs in a child process and reads the
// multiplier the client set, through the store.
auto times_multiplier = [](int number, scale::Scope& scope) -> scale::Future<int> {
  int multiplier = co_await scope.get<int>("multiplier");
  co_return number* multiplier;
};

namespace {

const std::string jobs_prefix = "jobs/";
const std::string results_prefix = "results/";

// After the Runtime took its `--scale-*` flags: the argument, else the environment, else the
// URL the seed's sketch names.
std::string store_url(int argc, char** argv) {
  if (argc > 1) return argv[1];
  if (const char* url = std::getenv("SCALE_STORE_URL"); url && *url) return url;
  return "http://localhost:12345";
}

// A job's numbers. Anything but an array of integers that fit an int (a string, an object, 1.5,
// "2") is refused whole with scale::TypeMismatch naming the job's key, as a typed get would be.
std::vector<int> job_numbers(const std::string& key, const nlohmann::json& job) {
  auto refuse = [&] {
    std::string text = job.dump();
    if (text.size() > 80) text = text.substr(0, 77) + "...";
    return scale::TypeMismatch(key, std::string("JSON ") + job.type_name() + " " + text,
                               "a job (an array of integers that fit an int)");
  };
  if (!job.is_array()) throw refuse();
  std::vector<int> numbers;
  numbers.reserve(job.size());
  for (const nlohmann::json& number : job) {
    if (number.is_number_unsigned()) {
      if (!std::in_range<int>(number.get<std::uint64_t>())) throw refuse();
    } else if (!number.is_number_integer() || !std::in_range<int>(number.get<std::int64_t>())) {
      throw refuse();
    }
    numbers.push_back(number.get<int>());
  }
  return numbers;
}

// What results/<id> says of a failed job: the message and the error's class (matched by type,
// the most derived first), as scale-store's own error answers say it.
nlohmann::json error_result(const std::exception_ptr& error) {
  auto result = [](const char* message, const char* type) {
    nlohmann::json json = nlohmann::json::object();
    json["error"] = message;
    json["type"] = type;
    return json;
  };
  try {
    std::rethrow_exception(error);
  } catch (const scale::TypeMismatch& e) {
    return result(e.what(), "TypeMismatch");
  } catch (const scale::KeyNotFound& e) {
    return result(e.what(), "KeyNotFound");
  } catch (const scale::WorkerLost& e) {
    return result(e.what(), "WorkerLost");
  } catch (const scale::RemoteError& e) {
    return result(e.what(), "RemoteError");
  } catch (const scale::ConnectionError& e) {
    return result(e.what(), "ConnectionError");
  } catch (const scale::Error& e) {
    return result(e.what(), "Error");
  } catch (const std::exception& e) {
    return result(e.what(), "Error");
  } catch (...) {
    return result("the map failed with an exception that is not a std::exception", "Error");
  }
}

// One job, from its value to its answer. It never fails: every error becomes the job's answer,
// or (when even the answer cannot be written, or the program is stopping) a line on stderr.
scale::Future<void> serve(scale::SharedMemory memory, scale::ScalabilityManager& manager, std::string key,
                          nlohmann::json job) {
  const std::string id = key.substr(jobs_prefix.size());
  nlohmann::json answer;
  try {
    scale::Iterator<int> numbers(job_numbers(key, job), manager);
    numbers.use_scope(memory);
    std::vector<int> values = co_await numbers.map(times_multiplier);
    answer = values;
  } catch (const scale::Cancelled&) {
    std::cerr << "08-js-facilitated: stopped before job '" << id
              << "' was done; it is served again on the next start\n";
    co_return;
  } catch (...) {
    answer = error_result(std::current_exception());
  }
  try {
    co_await memory.set(results_prefix + id, std::move(answer));
  } catch (const std::exception& e) {
    std::cerr << "08-js-facilitated: cannot write the answer of job '" << id << "': " << e.what() << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // in a worker process: serves tasks, then exits
  const std::string url = store_url(argc, argv);

  try {
    return runtime.run([&]() -> scale::Future<int> {
      scale::SharedMemory memory(url);
      scale::ProcessPoolManager manager;
      std::vector<scale::Future<void>> running;  // jobs being served, pruned as they end
      auto start = [&](std::string key, nlohmann::json job) {
        std::erase_if(running, [](const scale::Future<void>& served) { return served.ready(); });
        running.push_back(serve(memory, manager, std::move(key), std::move(job)));
      };

      // The store's revision now is the revision of a write: this worker's presence key (erased on
      // the way out). The watch replays every job written from that revision on; the listing
      // serves the jobs written before it that have no newer answer. So none is missed, or served
      // twice, whether it was written before this start, during it, or after.
      const std::string presence = "workers/08-js-facilitated/" + std::to_string(::getpid());
      nlohmann::json about = nlohmann::json::object();
      about["pid"] = ::getpid();
      about["watches"] = jobs_prefix;
      const scale::Revision now = co_await memory.set(presence, about);

      scale::Subscription watch = memory.watch(
          jobs_prefix,
          [&](const scale::SharedMemory::Change& change) {
            if (!change.erased) start(change.key, change.value);
          },
          now);
      co_await watch.ready();

      std::vector<scale::SharedMemory::Entry> jobs = co_await memory.list(jobs_prefix);
      std::vector<scale::SharedMemory::Entry> results = co_await memory.list(results_prefix);
      std::map<std::string, scale::Revision> answered;
      for (const auto& result : results) answered[result.key.substr(results_prefix.size())] = result.revision;
      std::size_t waiting = 0;
      for (auto& job : jobs) {
        if (job.revision >= now) continue;  // the watch has it
        auto found = answered.find(job.key.substr(jobs_prefix.size()));
        if (found != answered.end() && found->second > job.revision) continue;
        start(std::move(job.key), std::move(job.value));
        ++waiting;
      }
      std::cout << "08-js-facilitated: serving " << jobs_prefix << " of " << url.substr(0, url.find('?')) << " ("
                << waiting << " waiting from before this start); Ctrl-C stops" << std::endl;

      // The Runtime turns the first Ctrl-C or SIGTERM into a stop of every running map and says so
      // through stop_requested(); a tenth of a second between looks keeps the exit well within one.
      while (!runtime.stop_requested()) co_await scale::sleep_for(std::chrono::milliseconds(100));

      watch.cancel();
      co_await scale::when_all(std::move(running));
      co_await memory.erase(presence);
      std::cout << "08-js-facilitated: stopped" << std::endl;
      co_return 0;
    });
  } catch (const scale::Error& e) {
    // Most often the store is not there (the message says so and how to start one): say where the URL came from.
    std::cerr << "08-js-facilitated: " << e.what()
              << "\n  (the store's URL: the first argument, else $SCALE_STORE_URL, else http://localhost:12345)\n";
    return 1;
  }
}
