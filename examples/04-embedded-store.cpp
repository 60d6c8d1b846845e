// The canonical program against a store server embedded in the program itself: a
// scale::StoreServer on a free loopback port, its URL handed to SharedMemory and
// SharedEventEmitter, and the map run on a process pool whose workers reach the same store
// over HTTP (each worker opens the URL itself). Replace the embedded server by a running
// `scale-store --port 12345` and the URL "http://127.0.0.1:12345" and nothing else changes.
// Run: build/examples/04-embedded-store
#include <scale/scale.hpp>
#include <scale/store_server.hpp>

#include <cassert>
#include <iostream>
#include <string>

auto times_multiplier = [](int number, scale::Scope& scope) -> scale::Future<int> {
  int multiplier = co_await scope.get<int>("multiplier");
  co_return number* multiplier;
};

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // in a worker process: serves tasks, then exits

  // Only the parent gets here, so only the parent runs the store. A token shows the safe
  // default a server reachable from elsewhere would need (loopback alone does not).
  scale::StoreServer store({.token = "example-token"});
  store.start();
  const std::string url = "http://127.0.0.1:" + std::to_string(store.port()) + "?token=example-token";
  std::cout << "store server listening on 127.0.0.1:" << store.port() << "\n";

  return runtime.run([&]() -> scale::Future<int> {
    scale::SharedMemory memory(url);
    scale::SharedEventEmitter events(url);
    scale::ProcessPoolManager manager;
    scale::Iterator<int> numbers({1, 2, 3, 4, 5}, manager);
    numbers.use_scope(memory);

    // A subscriber of our own, ready before the emit so it cannot miss it.
    auto done = events.once("success!");
    co_await memory.set("multiplier", 10);
    std::vector<int> result = co_await numbers.map(times_multiplier);
    for (int i = 0; i < 5; ++i) assert(result[i] == (i + 1) * 10);
    co_await events.emit("success!", result);
    nlohmann::json payload = co_await std::move(done);
    assert(payload == nlohmann::json(result));

    // The store holds what the program wrote, with its revision: what `curl` would show.
    auto entry = co_await memory.entry("multiplier");
    assert(entry && entry->value == 10 && entry->revision > 0);
    std::cout << "map on " << manager.stats().workers_spawned << " worker processes: " << nlohmann::json(result).dump()
              << "; multiplier at revision " << entry->revision << "\n";
    co_return 0;
  });
}
