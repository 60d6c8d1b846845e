// Rendezvous hashing: which worker a key goes to, and what moves when the workers change.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/rendezvous.hpp"

using scale::detail::rendezvous_pick;
using scale::detail::rendezvous_pick_all;
using scale::detail::rendezvous_weight;

namespace {

std::vector<std::string> numbered(const std::string& prefix, std::size_t count) {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < count; ++i) names.push_back(prefix + std::to_string(i));
  return names;
}

/// The id of the worker each key goes to.
std::vector<std::string> owners(const std::vector<std::string>& keys, const std::vector<std::string>& workers) {
  std::vector<std::size_t> picked(keys.size());
  rendezvous_pick_all(keys, workers, picked);
  std::vector<std::string> ids;
  ids.reserve(keys.size());
  for (const std::size_t index : picked) ids.push_back(workers.at(index));
  return ids;
}

}  // namespace

TEST_CASE("the weights of fixed pairs never change, so every process and build agrees", "[rendezvous]") {
  // Computed apart from this code (FNV-1a 64, then splitmix64(fnv(key) ^ splitmix64(fnv(worker)))).
  struct Pinned {
    const char* key;
    const char* worker;
    std::uint64_t weight;
  };
  const Pinned pinned[] = {
      {"", "", 0xa0490b007fca3c4bULL},
      {"user-42", "worker-1", 0x983db5466172cba6ULL},
      {"user-42", "worker-2", 0xaedc5af1b0c64bf1ULL},
      {"a", "b", 0x24cddbd78c61033dULL},
      {"b", "a", 0x10c3a6f7a88467adULL},
      {"image/0001.png", "10.0.0.7:4123:3", 0xfe4a8f9a8d301627ULL},
      {"\xc3\xa9", "w", 0xad81646ba478061cULL},  // bytes above 127 hash as unsigned, whatever char is
  };
  for (const auto& pair : pinned) {
    CAPTURE(pair.key, pair.worker);
    REQUIRE(rendezvous_weight(pair.key, pair.worker) == pair.weight);
  }
}

TEST_CASE("a key goes to the same worker on every call and whatever order the workers are listed in", "[rendezvous]") {
  const auto keys = numbered("key-", 1000);
  std::vector<std::string> workers = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot"};
  const auto first = owners(keys, workers);
  REQUIRE(owners(keys, workers) == first);
  std::size_t batch_disagrees = 0;  // the batch form and the single form give the same
  for (std::size_t k = 0; k < keys.size(); ++k)
    if (workers[rendezvous_pick(keys[k], workers)] != first[k]) ++batch_disagrees;
  REQUIRE(batch_disagrees == 0);

  std::reverse(workers.begin(), workers.end());
  REQUIRE(owners(keys, workers) == first);
  std::rotate(workers.begin(), workers.begin() + 2, workers.end());
  REQUIRE(owners(keys, workers) == first);
  std::swap(workers[0], workers[3]);
  REQUIRE(owners(keys, workers) == first);
}

TEST_CASE("the chosen worker is the one of highest weight", "[rendezvous]") {
  const auto workers = numbered("worker-", 7);
  for (const auto& key : numbered("item/", 200)) {
    const std::size_t picked = rendezvous_pick(key, workers);
    std::uint64_t highest = 0;
    for (const auto& worker : workers) highest = std::max(highest, rendezvous_weight(key, worker));
    CAPTURE(key);
    REQUIRE(rendezvous_weight(key, workers[picked]) == highest);
  }
}

TEST_CASE("over 10,000 keys each of 5 workers gets 20% give or take 5 points", "[rendezvous]") {
  const auto keys = numbered("key-", 10000);
  const auto workers = numbered("worker-", 5);
  std::map<std::string, std::size_t> count;
  for (const auto& owner : owners(keys, workers)) ++count[owner];
  REQUIRE(count.size() == workers.size());
  for (const auto& [worker, keys_held] : count) {
    CAPTURE(worker, keys_held);
    REQUIRE(keys_held >= 1500);
    REQUIRE(keys_held <= 2500);
  }
}

TEST_CASE("a worker that leaves moves only the keys it held", "[rendezvous]") {
  const auto keys = numbered("key-", 10000);
  const auto workers = numbered("worker-", 5);
  const auto before = owners(keys, workers);
  for (std::size_t gone = 0; gone < workers.size(); ++gone) {
    auto rest = workers;
    rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(gone));
    const auto after = owners(keys, rest);
    std::size_t moved = 0, others_moved = 0;
    for (std::size_t k = 0; k < keys.size(); ++k) {
      if (before[k] == workers[gone])
        ++moved;  // owners() only names workers in `rest`
      else if (after[k] != before[k])
        ++others_moved;
    }
    CAPTURE(gone, moved);
    REQUIRE(others_moved == 0);
    REQUIRE(moved >= 1500);  // it held about a fifth, and all of those moved
    REQUIRE(moved <= 2500);
  }
}

TEST_CASE("a sixth worker that joins takes about a sixth of the keys, and only those move", "[rendezvous]") {
  const auto keys = numbered("key-", 10000);
  auto workers = numbered("worker-", 5);
  const auto before = owners(keys, workers);
  workers.insert(workers.begin() + 2, "worker-new");  // where it is listed does not matter
  const auto after = owners(keys, workers);
  std::size_t moved = 0, moved_elsewhere = 0;
  for (std::size_t k = 0; k < keys.size(); ++k) {
    if (after[k] == before[k]) continue;
    ++moved;
    if (after[k] != "worker-new") ++moved_elsewhere;
  }
  CAPTURE(moved);
  REQUIRE(moved_elsewhere == 0);
  REQUIRE(moved >= 1167);  // 1/6 of 10,000 is 1667; give or take 5 points
  REQUIRE(moved <= 2167);
}

TEST_CASE("the same id listed twice ties, and the lower index wins", "[rendezvous]") {
  const std::vector<std::string> workers = {"w", "w", "w"};
  REQUIRE(rendezvous_pick("any key", workers) == 0);
  const std::vector<std::string> keys = {"a", "b", "c"};
  std::vector<std::size_t> out(keys.size(), 99);
  rendezvous_pick_all(keys, workers, out);
  REQUIRE(out == std::vector<std::size_t>{0, 0, 0});
  const std::vector<std::string> one = {"only"};
  REQUIRE(rendezvous_pick("k", one) == 0);
}

TEST_CASE("rendezvous refuses an empty worker list and an output of the wrong size", "[rendezvous]") {
  const std::vector<std::string> none;
  const std::vector<std::string> keys = {"a", "b"};
  const std::vector<std::string> workers = {"w1", "w2"};
  std::vector<std::size_t> out(2);
  REQUIRE_THROWS_AS(rendezvous_pick("k", none), std::invalid_argument);
  REQUIRE_THROWS_WITH(rendezvous_pick("k", none), Catch::Contains("at least one worker"));
  REQUIRE_THROWS_AS(rendezvous_pick_all(keys, none, out), std::invalid_argument);
  std::vector<std::size_t> short_out(1);
  REQUIRE_THROWS_AS(rendezvous_pick_all(keys, workers, short_out), std::invalid_argument);
  REQUIRE_THROWS_WITH(rendezvous_pick_all(keys, workers, short_out), Catch::Contains("one place per key"));
  rendezvous_pick_all({}, workers, {});  // no keys: nothing to do
}
