// A reproduction of the Clang 16 miscompile that once made the store server corrupt its heap:
// an Asio coroutine on a strand of an io_context run by two threads, resumed on either thread
// after each co_await, as the server's connections were. Asio finds the running thread's
// recycling cache for coroutine frames and operations through a per-thread pointer; Clang 16
// hoists that thread_local's address out of the coroutine's loop and keeps it in the frame, so
// after a hop the coroutine uses the thread it started on's cache, which that thread uses too.
//
// The library is built with BOOST_ASIO_DISABLE_THREAD_KEYWORD_EXTENSION (CMakeLists.txt), so
// Asio reads the pointer through pthread_getspecific, an opaque call whose result no compiler
// may reuse across a suspension. Built without it (add -UBOOST_ASIO_DISABLE_THREAD_KEYWORD_EXTENSION
// to this file's flags) under clang++-16 -O2, the first case fails with thousands of mismatches.

#include <atomic>
#include <chrono>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>

namespace asio = boost::asio;

namespace {

// Out of line, so each call reads the running thread's pointer afresh: the reference the
// coroutine's own (inlined) reads are compared with.
[[gnu::noinline]] asio::detail::thread_info_base* running_thread_info() {
  return asio::detail::thread_context::top_of_thread_call_stack();
}

[[gnu::noinline]] std::thread::id running_thread() { return std::this_thread::get_id(); }

struct Counts {
  std::atomic<long> stale{0};   // the coroutine saw another thread's cache
  std::atomic<long> hopped{0};  // resumptions on another thread than the one that began the loop
};

asio::awaitable<int> child(int i) { co_return i; }

/// The server's shape: a loop whose every turn awaits a child coroutine (a frame from the cache)
/// and an operation that completes through the scheduler, so either thread may resume it.
asio::awaitable<void> hop(int rounds, Counts& counts) {
  std::thread::id began = running_thread();
  long sum = 0;
  for (int i = 0; i < rounds; ++i) {
    asio::detail::thread_info_base* before = asio::detail::thread_context::top_of_thread_call_stack();
    if (before != running_thread_info()) ++counts.stale;
    sum += co_await child(i);
    co_await asio::post(asio::use_awaitable);
    if (running_thread() != began) ++counts.hopped;
    if (asio::detail::thread_context::top_of_thread_call_stack() != running_thread_info()) ++counts.stale;
    sum += co_await child(i);
  }
  if (sum != static_cast<long>(rounds) * (rounds - 1)) ++counts.stale;
}

}  // namespace

TEST_CASE("an Asio coroutine resumed on another thread of its io_context uses that thread's frame cache",
          "[store][asio]") {
  constexpr int coroutines = 4, rounds = 20000;
  Counts counts;
  asio::io_context ioc(2);
  // Both threads run before the first coroutine starts, so neither can take all the work alone.
  auto work = asio::make_work_guard(ioc);
  std::thread first([&] { ioc.run(); }), second([&] { ioc.run(); });
  std::atomic<int> done{0}, failed{0};
  for (int k = 0; k < coroutines; ++k)
    asio::co_spawn(asio::make_strand(ioc), hop(rounds, counts), [&](std::exception_ptr error) {
      if (error) ++failed;
      ++done;
    });
  while (done < coroutines) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  work.reset();
  first.join();
  second.join();
  REQUIRE(done == coroutines);
  CHECK(failed == 0);
  INFO("resumptions on another thread: " << counts.hopped.load());
  CHECK(counts.hopped > 0);  // otherwise the case proves nothing
  CHECK(counts.stale == 0);
}
