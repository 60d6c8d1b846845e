// The crash capsule on the cluster: a --scale-processes worker (this very test executable started
// with --scale-worker URL on a redis-server the test starts) runs chunks on children of its own;
// one that dies of SIGSEGV leaves a capsule, which crosses Redis with the loss and reaches the
// manager's WorkerLost with the index within the call and the item read from the call's items.
// main() builds the Runtime from argc/argv first: in a worker (and its children) it serves and
// never returns.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "sanitizers/deliberate_crash.hpp"
#include "support/cluster.hpp"
#include "support/eventually.hpp"
#include "support/iota.hpp"
#include "support/worker_process.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

using namespace std::chrono_literals;
using namespace support;

volatile int* volatile g_nowhere = nullptr;  // the compiler cannot know it is null

[[gnu::noinline]] SCALE_TEST_DELIBERATE_CRASH int cluster_capsule_null_write(int x) {
  if (x == 123) *g_nowhere = x;
  return x;
}

auto null_write_on_123 = [](int x) { return cluster_capsule_null_write(x); };

std::string this_host() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

bool names(const std::vector<std::string>& stack, const std::string& function) {
  return std::any_of(stack.begin(), stack.end(),
                     [&](const std::string& line) { return line.find(function) != std::string::npos; });
}

template <class Call>
scale::WorkerLost expect_worker_lost(Call call) {
  try {
    call();
  } catch (const scale::WorkerLost& lost) {
    return lost;
  }
  FAIL("the map should have failed with scale::WorkerLost");
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("a segfaulting item on a --scale-processes worker gives the manager a WorkerLost with its capsule",
          "[crash_capsule][cluster]") {
  scale::Runtime runtime;
  const std::string url = fresh_url();
  WorkerProcess process(url, {.extra = {"--scale-processes", "1"}});
  scale::ClusterManager manager(url, fast_options());
  REQUIRE(eventually([&] {
    auto workers = manager.workers();
    return std::any_of(workers.begin(), workers.end(), [&](auto& worker) { return worker.pid == process.pid(); });
  }));
  scale::Iterator<int> numbers(iota(200), manager);

  // Split and rerun until the one bad item is alone, as any lost chunk is; the capsule is the
  // last crash's, taken in the worker's child and symbolized by the worker.
  const scale::WorkerLost lost = expect_worker_lost([&] { numbers.map(null_write_on_123, {.chunk_size = 10}).get(); });
  CHECK(lost.index() == 123);
  REQUIRE(lost.capsule().has_value());
  const scale::CrashReport& capsule = *lost.capsule();
  CHECK(capsule.item_index == 123);
  CHECK(capsule.item == "123");
  CHECK(capsule.signal == SIGSEGV);
  CHECK(capsule.signal_name == "SIGSEGV");
  CHECK(capsule.host == this_host());
  CHECK(capsule.pid > 0);
  CHECK(capsule.pid != process.pid());  // the worker's child died, not the worker
  INFO(lost.what());
  CHECK(names(capsule.stack, "cluster_capsule_null_write"));
  std::printf("--- the capsule of a cluster worker's child, as the manager's WorkerLost::what() shows it ---\n%s\n---\n",
              lost.what());

  // Without reruns the chunk fails as a whole (its first item's index), and the capsule still
  // names the item that crashed within it: the index within the chunk is made the call's.
  const scale::WorkerLost whole =
      expect_worker_lost([&] { numbers.map(null_write_on_123, {.chunk_size = 10, .max_retries = 0}).get(); });
  CHECK(whole.index() == 120);
  REQUIRE(whole.capsule().has_value());
  CHECK(whole.capsule()->item_index == 123);
  CHECK(whole.capsule()->item == "123");

  // The worker lived through both.
  CHECK(process.wait_exit(0ms) == -1);
  CHECK(numbers.map([](int x) { return x + 1; }).get()[199] == 200);
}

int main(int argc, char** argv) {
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
