// map throughput: ThreadPoolManager's Iterator::map of a cheap function over 10,000,000 ints,
// beside the same map done with oneTBB's parallel_for (when found) and a plain loop, measured in
// the same run. Each figure is the best of several repetitions, scale's and TBB's alternating,
// and includes allocating the result (fresh memory for every repetition, for every contender).
// Target (reported, not asserted): scale >= 1.0x TBB; recorded in results.json.
//
//   make bench        (or: build/bench/map_throughput)

#include <scale/iterator.hpp>
#include <scale/managers/thread_pool.hpp>
#include <scale/runtime.hpp>

#include "support/results.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <numeric>
#include <thread>
#include <vector>

#if SCALE_BENCH_HAVE_TBB
#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#endif

namespace {

constexpr std::size_t item_count = 10'000'000;
constexpr int repetitions = 5;

int cheap(int x) { return x * 3 + 1; }
// What a user passes to map; TBB's body calls the same function.
constexpr auto cheap_fn = [](int x) { return cheap(x); };

template <class Body>
double items_per_second(Body& body) {
  auto start = std::chrono::steady_clock::now();
  body();
  std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return static_cast<double>(item_count) / elapsed.count();
}

template <class Body>
double best_items_per_second(Body body) {
  double best = 0;
  for (int i = 0; i < repetitions; ++i) best = std::max(best, items_per_second(body));
  return best;
}

bool same(const std::vector<int>& a, const std::vector<int>& b) { return a == b; }

}  // namespace

int main() {
  scale::Runtime runtime;
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<int> input(item_count);
  std::iota(input.begin(), input.end(), 0);

  std::vector<int> expected;
  double loop_rate = best_items_per_second([&] {
    std::vector<int> out(input.size());
    std::transform(input.begin(), input.end(), out.begin(), cheap);
    expected = std::move(out);
  });

  scale::ThreadPoolManager manager(threads);
  scale::Iterator<int> numbers(input, manager);
  std::vector<int> scale_result;
  auto scale_body = [&] { scale_result = numbers.map(cheap_fn).get(); };
#if SCALE_BENCH_HAVE_TBB
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
  std::vector<int> tbb_result;
  auto tbb_body = [&] {
    std::vector<int> out(input.size());
    tbb::parallel_for(tbb::blocked_range<std::size_t>(0, input.size()), [&](const tbb::blocked_range<std::size_t>& r) {
      for (std::size_t i = r.begin(); i != r.end(); ++i) out[i] = cheap(input[i]);
    });
    tbb_result = std::move(out);
  };
  double scale_rate = 0, tbb_rate = 0;
  for (int i = 0; i < repetitions; ++i) {  // alternating, so a burst of other load favours neither
    scale_rate = std::max(scale_rate, items_per_second(scale_body));
    tbb_rate = std::max(tbb_rate, items_per_second(tbb_body));
  }
  if (!same(tbb_result, expected)) {
    std::fprintf(stderr, "map_throughput: TBB's result differs\n");
    return 1;
  }
#else
  double scale_rate = best_items_per_second(scale_body);
#endif
  if (!same(scale_result, expected)) {
    std::fprintf(stderr, "map_throughput: scale's map gave a wrong result\n");
    return 1;
  }

  std::printf("map of x*3+1 over %zu ints, %u threads, best of %d\n", item_count, threads, repetitions);
  std::printf("  scale ThreadPoolManager map : %8.1f M items/s\n", scale_rate / 1e6);
#if SCALE_BENCH_HAVE_TBB
  std::printf("  tbb::parallel_for           : %8.1f M items/s\n", tbb_rate / 1e6);
#endif
  std::printf("  plain loop, one thread      : %8.1f M items/s\n", loop_rate / 1e6);
#if SCALE_BENCH_HAVE_TBB
  std::printf("  scale / tbb = %.2f   (target >= 1.0)\n", scale_rate / tbb_rate);
  scale_bench::record({"map_throughput", "thread pool map, 10,000,000 ints", "items/s", scale_rate,
                       "TBB parallel_for", tbb_rate, ">=", 1.0});
#else
  std::printf("  (TBB not found: install libtbb-dev to measure tbb::parallel_for)\n");
#endif
  std::printf("  scale / plain loop = %.2f\n", scale_rate / loop_rate);
  return 0;
}
