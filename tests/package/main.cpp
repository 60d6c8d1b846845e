// Built against the installed scale package by tests/package/run.cmake.
// Prints nothing; the exit status is the result.
#include <scale/scale.hpp>

#include <string_view>
#include <vector>

int main(int argc, char** argv) {
  constexpr std::string_view version = SCALE_VERSION_STRING;
  if (version.empty()) return 1;
  scale::Runtime runtime(argc, argv);
  return runtime.run([]() -> scale::Future<int> {
    scale::SharedMemory memory;
    scale::ThreadPoolManager manager(2);
    scale::Iterator<int> numbers(std::vector<int>{1, 2, 3}, manager);
    numbers.use_scope(memory);
    co_await memory.set("offset", 1);
    auto add = [](int n, scale::Scope& scope) -> scale::Future<int> {
      co_return n + co_await scope.get<int>("offset");
    };
    std::vector<int> result = co_await numbers.map(add);
    co_return result == std::vector<int>{2, 3, 4} ? 0 : 1;
  });
}
