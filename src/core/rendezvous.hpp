#pragma once
// Rendezvous (highest random weight) hashing: which worker a key goes to.
//
// Every worker gets a weight for the key, and the key goes to the worker of highest weight. Why
// this and not a hash ring or `hash % N`:
//   - When a worker leaves, only the keys it held move (each to its own second choice); when one
//     joins, only the keys it now wins move, all of them to it: about 1/N of them. `hash % N`
//     would move almost every key, and per-worker caches would go cold all at once.
//   - No ring to build or keep in step: the workers' ids are all the state, so a manager and a
//     worker in different processes agree as long as they see the same ids.
//   - The worker list's order does not matter, and a worker's weight does not depend on the others.
//
// The weight is fixed forever (it is a wire format: processes of different builds must agree):
// FNV-1a 64 over the bytes of each text (as unsigned char, so a signed `char` platform gives the
// same), then weight = splitmix64(fnv(key) ^ splitmix64(fnv(worker))). Never std::hash, which
// differs between standard libraries and may differ between runs. Combining two hashes, rather
// than hashing the concatenated pair, lets the batch form hash each key and each worker once and
// spend one mix per (key, worker) pair; the inner splitmix64 spreads the worker's hash over all 64
// bits before the XOR and the outer one mixes the pair, so the two roles are not interchangeable.
// tests/rendezvous_test.cpp pins a few weights, so a change of the function fails a test.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace scale::detail {

/// The weight of `worker` for `key`: the same in every process, build and machine.
std::uint64_t rendezvous_weight(std::string_view key, std::string_view worker) noexcept;

/// The index in `workers` of the worker with the highest weight for `key`. Ties (equal weights:
/// in practice the same id listed twice) go to the lower id text, then the lower index. Throws
/// std::invalid_argument when `workers` is empty.
std::size_t rendezvous_pick(std::string_view key, std::span<const std::string> workers);

/// `out[k] = rendezvous_pick(keys[k], workers)` for every key, hashing each worker once per call
/// and allocating nothing per key (one buffer of workers.size() hashes per call). Throws
/// std::invalid_argument when `workers` is empty or `out` is not the size of `keys`.
void rendezvous_pick_all(std::span<const std::string> keys, std::span<const std::string> workers,
                         std::span<std::size_t> out);

}  // namespace scale::detail
