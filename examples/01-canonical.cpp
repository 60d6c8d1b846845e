// The canonical program: a map whose worker function reads shared state through its Scope.
// It runs in child processes of this executable (ProcessPoolManager); change the manager
// (InlineManager, ThreadPoolManager, ...) and nothing else changes.
// Run: make demo   (or build/examples/01-canonical)
#include <scale/scale.hpp>
#include <cassert>

// Runs wherever the manager sends it: this thread, a pool thread, a child process, another server.
// It captures nothing; shared state comes through `scope`.
auto times_multiplier = [](int number, scale::Scope& scope) -> scale::Future<int> {
  int multiplier = co_await scope.get<int>("multiplier");
  co_return number* multiplier;
};

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // in a worker process: serves tasks, then exits
  return runtime.run([]() -> scale::Future<int> {
    scale::SharedMemory memory;         // or "http://localhost:12345", "redis://host:6379"
    scale::SharedEventEmitter events;   // same URLs
    scale::ProcessPoolManager manager;  // or InlineManager, ThreadPoolManager, ClusterManager
    scale::Iterator<int> numbers({1, 2, 3, 4, 5}, manager);
    numbers.use_scope(memory);

    co_await memory.set("multiplier", 10);
    std::vector<int> result = co_await numbers.map(times_multiplier);
    for (int i = 0; i < 5; ++i) assert(result[i] == (i + 1) * 10);
    co_await events.emit("success!");
    co_return 0;
  });
}
