#include <catch2/catch.hpp>

#include <scale/runtime.hpp>

#include <string>
#include <vector>

TEST_CASE("the Runtime takes its --scale-* flags out of argc and argv", "[runtime]") {
  std::vector<std::string> args = {"app", "--scale-heartbeat-ms", "500", "input.txt", "--scale-debug", "-v"};
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
  REQUIRE(runtime.scale_flags() == std::vector<std::string>{"--scale-heartbeat-ms", "500", "--scale-debug"});
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
