// The canonical program in promise-chaining form: plain main, no coroutine of its own.
// Each then() callback runs on the runtime's loop thread; get() waits on the main thread.
// Run: build/examples/02-promise-chaining
#include <scale/scale.hpp>
#include <cassert>

auto times_multiplier = [](int number, scale::Scope& scope) -> scale::Future<int> {
  int multiplier = co_await scope.get<int>("multiplier");
  co_return number* multiplier;
};

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // in a worker process: serves tasks, then exits
  scale::SharedMemory memory;
  scale::SharedEventEmitter events;
  scale::ProcessPoolManager manager;  // the map runs in child processes of this executable
  scale::Iterator<int> numbers({1, 2, 3, 4, 5}, manager);
  numbers.use_scope(memory);

  memory.set({{"multiplier", 10}})
      .then([&] { return numbers.map(times_multiplier); })
      .then([](std::vector<int> result) {
        for (int i = 0; i < 5; ++i) assert(result[i] == (i + 1) * 10);
        return result;
      })
      .then([&](std::vector<int>) { return events.emit("success!"); })
      .get();
  return 0;
}
