// Errors end to end: each error type arises as itself on every manager where it can (inline, the
// thread pool, the process pool), whether the library raises it (a scope call on an in-process,
// http:// or redis:// memory) or the user's function throws it, and tests catch it by type.
// The cluster's side is in cluster_test.cpp, the store's answers in store_server_test.cpp.
//
// main() builds the Runtime from argc/argv first: in a worker it serves tasks and never returns.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <scale/scale.hpp>

#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/http_store.hpp"
#include "support/redis_server.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

using namespace std::chrono_literals;

namespace errors_test {

/// A user's own subclass of scale::Error: another process cannot construct it.
class UserError : public scale::Error {
 public:
  using scale::Error::Error;
};

std::vector<int> iota(int n) {
  std::vector<int> items(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) items[static_cast<std::size_t>(i)] = i;
  return items;
}

auto throws_key_not_found = [](int x) {
  if (x == 3) throw scale::KeyNotFound("item/3");
  return x;
};

auto throws_type_mismatch = [](int x) {
  if (x == 3) throw scale::TypeMismatch("item/3", "a string", "int");
  return x;
};

auto throws_runtime_error = [](int x) {
  if (x == 3) throw std::runtime_error("three is not allowed");
  return x;
};

auto throws_user_error = [](int x) {
  if (x == 3) throw UserError("my own error");
  return x;
};

auto twice = [](int x) { return 2 * x; };

auto reads_missing_key = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<int> value = scope.get<int>("missing");
  int found = co_await std::move(value);
  co_return found + x;
};

auto increments_text = [](int x, scale::Scope& scope) -> scale::Future<int> {
  scale::Future<std::int64_t> sum = scope.increment("text", 1);
  std::int64_t n = co_await std::move(sum);
  co_return x + static_cast<int>(n);
};

/// What the function itself sees when its scope call fails: the type it could catch it as.
auto catches_in_function = [](int, scale::Scope& scope) -> scale::Future<std::string> {
  std::string seen = "nothing";
  try {
    scale::Future<std::int64_t> sum = scope.increment("text", 1);
    co_await std::move(sum);
  } catch (const scale::TypeMismatch& error) {
    seen = "TypeMismatch " + error.key() + " " + error.stored();
  } catch (const scale::RemoteError& error) {
    seen = "RemoteError " + error.type_name();
  } catch (const std::exception& error) {
    seen = std::string("other ") + error.what();
  }
  try {
    scale::Future<int> value = scope.get<int>("missing");
    co_await std::move(value);
  } catch (const scale::KeyNotFound& error) {
    seen += ", KeyNotFound " + error.key();
  } catch (const std::exception& error) {
    seen += std::string(", other ") + error.what();
  }
  co_return seen;
};

/// A type with no JSON conversion and not trivially copyable.
struct Opaque {
  std::string text;
};

auto opaque_length = [](Opaque o) { return o.text.size(); };

int add_one(int x) { return x + 1; }

}  // namespace errors_test

struct Inline {
  static constexpr bool ships = false;
  static std::unique_ptr<scale::ScalabilityManager> make() { return std::make_unique<scale::InlineManager>(); }
};
struct ThreadPool {
  static constexpr bool ships = false;
  static std::unique_ptr<scale::ScalabilityManager> make() { return std::make_unique<scale::ThreadPoolManager>(2); }
};
struct ProcessPool {
  static constexpr bool ships = true;
  static std::unique_ptr<scale::ScalabilityManager> make() {
    return std::make_unique<scale::ProcessPoolManager>(scale::ProcessPoolOptions{.max_workers = 2});
  }
};

TEMPLATE_TEST_CASE("a scale::Error subtype thrown by the function reaches the caller as its own type",
                   "[errors][process_pool][thread_pool]", Inline, ThreadPool, ProcessPool) {
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(errors_test::iota(10), *manager);
  scale::RunOptions options{.chunk_size = 2};
  try {
    numbers.map(errors_test::throws_key_not_found, options).get();
    FAIL("the map should have failed");
  } catch (const scale::KeyNotFound& error) {
    CHECK(error.key() == "item/3");
    CHECK(std::string(error.what()) == scale::KeyNotFound("item/3").what());
  }
  try {
    numbers.for_each(errors_test::throws_type_mismatch, options).get();
    FAIL("the for_each should have failed");
  } catch (const scale::TypeMismatch& error) {
    CHECK(error.key() == "item/3");
    CHECK(error.stored() == "a string");
    CHECK(error.requested() == "int");
  }
  // The manager is still usable.
  REQUIRE(numbers.map(errors_test::twice).get()[9] == 18);
}

TEMPLATE_TEST_CASE("any other exception arrives as RemoteError across processes and as itself on threads",
                   "[errors][process_pool][thread_pool]", Inline, ThreadPool, ProcessPool) {
  scale::Runtime runtime;
  auto manager = TestType::make();
  scale::Iterator<int> numbers(errors_test::iota(10), *manager);
  if constexpr (TestType::ships) {
    try {
      numbers.map(errors_test::throws_runtime_error).get();
      FAIL("the map should have failed");
    } catch (const scale::RemoteError& error) {
      CHECK(error.type_name() == "std::runtime_error");
      CHECK(error.message() == "three is not allowed");
    }
    // A user's own subclass of scale::Error cannot be built in this process: a RemoteError naming it.
    try {
      numbers.map(errors_test::throws_user_error).get();
      FAIL("the map should have failed");
    } catch (const scale::RemoteError& error) {
      CHECK(error.type_name() == "errors_test::UserError");
      CHECK(error.message() == "my own error");
    }
  } else {
    REQUIRE_THROWS_AS(numbers.map(errors_test::throws_runtime_error).get(), std::runtime_error);
    REQUIRE_THROWS_MATCHES(numbers.map(errors_test::throws_runtime_error).get(), std::runtime_error,
                           Catch::Message("three is not allowed"));
    REQUIRE_THROWS_AS(numbers.map(errors_test::throws_user_error).get(), errors_test::UserError);
  }
}

namespace {

/// The memories a scope may be given: in-process, http:// (an embedded store), redis://.
std::vector<std::string> memory_urls() {
  return {"", support::fresh_store_url(),
          support::RedisServer::shared().url() + "?namespace=" + support::RedisServer::fresh_namespace()};
}

scale::SharedMemory memory_at(const std::string& url) {
  return url.empty() ? scale::SharedMemory() : scale::SharedMemory(url);
}

}  // namespace

TEMPLATE_TEST_CASE("a scope misuse raises the same type in the function and at the caller on every memory",
                   "[errors][process_pool][thread_pool][http][redis]", Inline, ThreadPool, ProcessPool) {
  scale::Runtime runtime;
  auto manager = TestType::make();
  for (const std::string& url : memory_urls()) {
    INFO("memory: " << (url.empty() ? std::string("in-process") : url));
    scale::SharedMemory memory = memory_at(url);
    memory.set("text", std::string("not a number")).get();
    scale::Iterator<int> numbers(errors_test::iota(4), *manager);
    numbers.use_scope(memory);

    // KeyNotFound: raised by the function's own get (in the child on the process pool).
    try {
      numbers.map(errors_test::reads_missing_key).get();
      FAIL("the map should have failed");
    } catch (const scale::KeyNotFound& error) {
      CHECK(error.key() == "missing");
    }
    // TypeMismatch: raised by the memory for the function's increment (by the parent, through the
    // link, for an in-process memory on the process pool).
    try {
      numbers.map(errors_test::increments_text).get();
      FAIL("the map should have failed");
    } catch (const scale::TypeMismatch& error) {
      CHECK(error.key() == "text");
      CHECK(error.stored() == "a string");
    }
    // The function itself catches both by type.
    std::vector<std::string> seen = numbers.map(errors_test::catches_in_function).get();
    for (const auto& what : seen) CHECK(what == "TypeMismatch text a string, KeyNotFound missing");
  }
}

TEST_CASE("a capturing lambda, a function pointer or an unsendable value fails with NotShippable on the process pool",
          "[errors][process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});
  scale::Iterator<int> numbers(errors_test::iota(10), manager);
  int offset = 3;
  auto captures = [offset](int x) { return x + offset; };
  REQUIRE_THROWS_AS(numbers.map(captures).get(), scale::NotShippable);
  REQUIRE_THROWS_AS(numbers.filter([offset](int x) { return x > offset; }).get(), scale::NotShippable);
  REQUIRE_THROWS_AS(numbers.map(&errors_test::add_one).get(), scale::NotShippable);
  std::vector<errors_test::Opaque> items{{"a"}, {"bb"}};
  scale::Iterator<errors_test::Opaque> opaque(items, manager);
  REQUIRE_THROWS_AS(opaque.map(errors_test::opaque_length).get(), scale::NotShippable);
  REQUIRE_THROWS_WITH(opaque.map(errors_test::opaque_length).get(), Catch::Contains("to_json"));
  CHECK(manager.stats().workers_spawned == 0);  // nothing was sent anywhere
  // The thread tiers take all of them.
  scale::ThreadPoolManager threads(2);
  scale::Iterator<int> on_threads(errors_test::iota(10), threads);
  REQUIRE(on_threads.map(captures).get()[0] == 3);
}

TEST_CASE("a pool whose only workers are of another build fails its calls with BuildMismatch",
          "[errors][process_pool]") {
  scale::Runtime runtime;
  scale::ProcessPoolManager manager({.max_workers = 1});
  // The manager's fingerprint is taken; a worker spawned from now on computes another one.
  ::setenv("SCALE_FINGERPRINT_SALT", "another build", 1);
  scale::Iterator<int> numbers(errors_test::iota(10), manager);
  auto pending = numbers.map(errors_test::twice);
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (manager.stats().workers_spawned == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  ::unsetenv("SCALE_FINGERPRINT_SALT");
  REQUIRE(manager.stats().workers_spawned == 1);
  try {
    pending.get();
    FAIL("the map should have failed");
  } catch (const scale::BuildMismatch& error) {
    CHECK_THAT(std::string(error.what()), Catch::Contains("different build") && Catch::Contains("executable"));
  }
  REQUIRE_THROWS_AS(numbers.map(errors_test::twice).get(), scale::BuildMismatch);
}

int main(int argc, char** argv) {
  // In a worker this serves tasks and never returns. In the parent the Runtime goes away again:
  // each test case builds its own.
  { scale::Runtime runtime(argc, argv); }
  return Catch::Session().run(argc, argv);
}
