#include <catch2/catch.hpp>

#include <scale/error.hpp>
#include <scale/iterator.hpp>
#include <scale/managers/thread_pool.hpp>
#include <scale/runtime.hpp>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

// GCC 12 warns about members left out of a designated initialiser (-Wextra); leaving them out is
// the point of RunOptions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

namespace {

/// A command line for Runtime(argc, argv): the strings stay alive, argv ends with a null.
struct CommandLine {
  explicit CommandLine(std::vector<std::string> arguments) : args(std::move(arguments)) {
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    argc = static_cast<int>(args.size());
  }
  /// What argv holds now, up to argc.
  std::vector<std::string> left() const { return {argv.begin(), argv.begin() + argc}; }

  std::vector<std::string> args;
  std::vector<char*> argv;
  int argc;
};

/// The message of the scale::Error that Runtime(argc, argv) throws for `arguments`, which must be
/// left in argv as they were.
std::string refusal(std::vector<std::string> arguments) {
  CommandLine line(arguments);
  try {
    scale::Runtime runtime(line.argc, line.argv.data());
  } catch (const scale::Error& error) {
    CHECK(line.left() == arguments);
    return error.what();
  }
  FAIL("Runtime(argc, argv) accepted the arguments");
  return {};
}

}  // namespace

TEST_CASE("the Runtime takes its --scale-* flags out of argc and argv", "[runtime]") {
  std::vector<std::string> args = {"app", "--scale-heartbeat-ms", "500", "input.txt", "--scale-worker-link", "-v"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int argc = static_cast<int>(args.size());
  scale::Runtime runtime(argc, argv.data());
  REQUIRE(argc == 3);
  REQUIRE(std::string(argv[0]) == "app");
  REQUIRE(std::string(argv[1]) == "input.txt");
  REQUIRE(std::string(argv[2]) == "-v");
  REQUIRE(argv[3] == nullptr);
  REQUIRE(runtime.scale_flags() == std::vector<std::string>{"--scale-heartbeat-ms", "500", "--scale-worker-link"});
}

TEST_CASE("a flag's value is taken as the next argument or after an equals sign", "[runtime]") {
  for (const auto& flags : {std::vector<std::string>{"--scale-heartbeat-ms", "250"},
                            std::vector<std::string>{"--scale-heartbeat-ms=250"}}) {
    std::vector<std::string> args{"app", "first"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back("last");
    CommandLine line(args);
    scale::Runtime runtime(line.argc, line.argv.data());
    CHECK(line.left() == std::vector<std::string>{"app", "first", "last"});
    CHECK(runtime.scale_flags() == flags);
    CHECK(runtime.original_arguments() == args);
  }
  // Both forms read the value: a bad one is refused the same way.
  CHECK_THAT(refusal({"app", "--scale-heartbeat-ms", "soon"}),
             Catch::Contains("--scale-heartbeat-ms takes milliseconds") && Catch::Contains("'soon'"));
  CHECK_THAT(refusal({"app", "--scale-heartbeat-ms=soon"}),
             Catch::Contains("--scale-heartbeat-ms takes milliseconds") && Catch::Contains("'soon'"));
}

TEST_CASE("a flag is matched by its exact name, never as the prefix of another", "[runtime]") {
  {
    // --scale-worker takes a URL; --scale-worker-link, which it is a prefix of, takes none.
    CommandLine line({"app", "--scale-worker-link", "input.txt"});
    scale::Runtime runtime(line.argc, line.argv.data());
    CHECK(line.left() == std::vector<std::string>{"app", "input.txt"});
    CHECK(runtime.scale_flags() == std::vector<std::string>{"--scale-worker-link"});
  }
  // A prefix of a flag, or a flag with more after it, is another (unknown) name.
  CHECK_THAT(refusal({"app", "--scale-work", "redis://127.0.0.1:6379"}),
             Catch::Contains("unknown flag '--scale-work'"));
  CHECK_THAT(refusal({"app", "--scale-worker-links"}), Catch::Contains("unknown flag '--scale-worker-links'"));
  CHECK_THAT(refusal({"app", "--scale-heartbeat=100"}), Catch::Contains("unknown flag '--scale-heartbeat'"));
}

TEST_CASE("an unknown --scale-* flag is refused with the list of the known ones", "[runtime]") {
  const std::string message = refusal({"app", "input.txt", "--scale-debug", "-v"});
  CHECK_THAT(message, Catch::Contains("unknown flag '--scale-debug'"));
  for (const char* known : {"--scale-worker redis://host:port", "--scale-heartbeat-ms 1000", "--scale-worker-link"})
    CHECK_THAT(message, Catch::Contains(known));
  // Arguments of the program that only look alike are left alone.
  CommandLine line({"app", "-scale-debug", "--scaled", "scale-debug"});
  scale::Runtime runtime(line.argc, line.argv.data());
  CHECK(line.left() == line.args);
  CHECK(runtime.scale_flags().empty());
}

TEST_CASE("a flag without its value is refused, saying what the value is", "[runtime]") {
  CHECK_THAT(refusal({"app", "--scale-heartbeat-ms"}),
             Catch::Contains("--scale-heartbeat-ms needs a number of milliseconds: --scale-heartbeat-ms 1000"));
  CHECK_THAT(refusal({"app", "--scale-heartbeat-ms="}), Catch::Contains("--scale-heartbeat-ms needs a number"));
  // The next argument is not a value when it is another --scale-* flag.
  CHECK_THAT(refusal({"app", "--scale-worker", "--scale-heartbeat-ms", "100"}),
             Catch::Contains("--scale-worker needs a URL: --scale-worker redis://host:port"));
  CHECK_THAT(refusal({"app", "--scale-worker="}), Catch::Contains("--scale-worker needs a URL"));
  // And a flag that takes no value is refused one.
  CHECK_THAT(refusal({"app", "--scale-worker-link=3"}), Catch::Contains("--scale-worker-link takes no value"));
}

TEST_CASE("only one Runtime exists at a time", "[runtime]") {
  scale::Runtime runtime;
  REQUIRE_THROWS_AS(scale::Runtime(), std::logic_error);
}

TEST_CASE("run returns the callable's value and rethrows its error", "[runtime]") {
  scale::Runtime runtime;
  REQUIRE(runtime.run([] { return 4; }) == 4);
  REQUIRE(runtime.run([]() -> scale::Future<std::string> { co_return "done"; }) == "done");
  REQUIRE_THROWS_WITH(runtime.run([]() -> scale::Future<int> {
    throw std::runtime_error("inside");
    co_return 1;
  }),
                      "inside");
}

TEST_CASE("a Runtime can be created again after the previous one is gone", "[runtime]") {
  for (int i = 0; i < 3; ++i) {
    scale::Runtime runtime;
    REQUIRE(runtime.run([i] { return i; }) == i);
  }
}

namespace {

void (*sigint_handler())(int) {
  struct sigaction current {};
  ::sigaction(SIGINT, nullptr, &current);
  return current.sa_handler;
}

}  // namespace

TEST_CASE("the Runtime handles SIGINT while it lives, and leaves it alone when told to", "[runtime][control]") {
  auto* before = sigint_handler();
  {
    scale::Runtime runtime;
    REQUIRE(sigint_handler() != before);
  }
  REQUIRE(sigint_handler() == before);
  {
    scale::Runtime runtime(scale::RuntimeOptions{.handle_signals = false});
    REQUIRE(sigint_handler() == before);
  }
}

TEST_CASE("a first SIGINT stops the running calls with Cancelled, and later ones fail at once", "[runtime][control]") {
  scale::Runtime runtime;
  scale::ThreadPoolManager pool(2);
  scale::Iterator<int> numbers(std::vector<int>{1, 2}, pool);
  auto wait_for_stop = [](int, scale::Scope& scope) {
    for (int i = 0; i < 20'000 && !scope.stop_requested(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return scope.stop_requested() ? 1 : 0;
  };
  std::atomic<bool> raised{false};
  scale::RunOptions options{.chunk_size = 1, .on_progress = [&](const scale::Progress&) {
                              if (!raised.exchange(true)) ::raise(SIGINT);
                            }};
  // on_progress runs only when something moved: report from inside the item first.
  auto reporting = [wait_for_stop](int x, scale::Scope& scope) {
    scope.progress(0.5);
    return wait_for_stop(x, scope);
  };
  const auto start = std::chrono::steady_clock::now();
  REQUIRE_THROWS_AS(numbers.map(reporting, options).get(), scale::Cancelled);
  REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(15));
  REQUIRE(runtime.stop_requested());
  REQUIRE_THROWS_AS(numbers.map([](int x) { return x; }).get(), scale::Cancelled);
}
