#include <catch2/catch.hpp>

#include <scale/detail/recycling_allocator.hpp>
#include <scale/future.hpp>
#include <scale/runtime.hpp>

#include <cstring>
#include <memory>
#include <set>
#include <thread>
#include <vector>

namespace {

/// Made on the calling thread; once `pending` completes it resumes on the loop and ends there,
/// so its frame is freed on another thread than the one that allocated it.
scale::Future<int> add_one(scale::Future<int> pending) {
  const int value = co_await std::move(pending);
  co_return value + 1;
}

}  // namespace

TEST_CASE("recycled blocks are distinct while held, whole, and reused on the thread that freed them",
          "[recycling_allocator]") {
  using scale::detail::recycled_allocate;
  using scale::detail::recycled_free;
  for (std::size_t size : {1u, 31u, 32u, 33u, 200u, 512u, 513u, 4096u}) {
    std::vector<void*> held;
    std::set<void*> distinct;
    for (int i = 0; i < 100; ++i) {
      void* block = recycled_allocate(size);
      std::memset(block, i, size);  // every byte is writable (ASan checks it in its build)
      held.push_back(block);
      distinct.insert(block);
    }
    REQUIRE(distinct.size() == held.size());
    for (void* block : held) recycled_free(block, size);
  }
  void* first = recycled_allocate(100);
  recycled_free(first, 100);
  void* again = recycled_allocate(120);  // the same size class (128 bytes)
  if (scale::detail::recycling_blocks())
    REQUIRE(again == first);
  else
    REQUIRE(again != nullptr);
  recycled_free(again, 120);
}

TEST_CASE("a recycled block freed on another thread, and a thread that exits holding blocks, are fine",
          "[recycling_allocator]") {
  using scale::detail::recycled_allocate;
  using scale::detail::recycled_free;
  std::vector<void*> made;
  for (int i = 0; i < 200; ++i) made.push_back(recycled_allocate(64));
  std::size_t kept_after_frees = 0, kept_after_allocations = 0;
  std::thread other([&] {
    for (void* block : made) recycled_free(block, 64);  // kept by this thread, up to its bound
    kept_after_frees = scale::detail::recycled_blocks_kept(64);
    std::vector<void*> again;
    for (int i = 0; i < 200; ++i) {
      again.push_back(recycled_allocate(64));
      std::memset(again.back(), 1, 64);
    }
    kept_after_allocations = scale::detail::recycled_blocks_kept(64);
    for (void* block : again) recycled_free(block, 64);
  });  // exits holding 64 blocks: its lists are freed with it
  other.join();
  if (scale::detail::recycling_blocks()) {
    REQUIRE(kept_after_frees == 64);  // the other 136 went back to the heap
    REQUIRE(kept_after_allocations == 0);
  } else {
    REQUIRE(kept_after_frees == 0);
  }
  void* block = recycled_allocate(64);
  std::memset(block, 2, 64);
  recycled_free(block, 64);
}

TEST_CASE("coroutine frames made on several threads and freed on the loop keep their values",
          "[recycling_allocator][future]") {
  scale::Runtime runtime;
  std::vector<std::thread> threads;
  std::vector<long> sums(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20'000; ++i) {
        scale::Promise<int> promise;
        scale::Future<int> sum = add_one(promise.get_future());  // suspends: the Promise is pending
        promise.set_value(i);
        sums[t] += sum.get();
      }
    });
  for (auto& thread : threads) thread.join();
  for (long sum : sums) REQUIRE(sum == 20'000L * 19'999 / 2 + 20'000);
}
