// Rendezvous hashing (src/core/rendezvous.hpp): the weight is part of what processes agree on.

#include "core/rendezvous.hpp"

#include <stdexcept>
#include <string>
#include <vector>

namespace scale::detail {

namespace {

/// FNV-1a, 64 bits: offset basis 0xcbf29ce484222325, prime 0x100000001b3.
std::uint64_t fnv1a64(std::string_view text) noexcept {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

/// splitmix64's output function (Steele, Lea, Flood 2014): a bijection with full avalanche.
std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::uint64_t worker_part(std::string_view worker) noexcept { return splitmix64(fnv1a64(worker)); }

std::uint64_t combined(std::uint64_t key_hash, std::uint64_t worker_part) noexcept {
  return splitmix64(key_hash ^ worker_part);
}

/// The index of the highest weight; `part(i)` is worker i's worker_part.
template <class Part>
std::size_t highest(std::uint64_t key_hash, std::span<const std::string> workers, Part part) {
  std::size_t best = 0;
  std::uint64_t best_weight = combined(key_hash, part(0));
  for (std::size_t i = 1; i < workers.size(); ++i) {
    const std::uint64_t weight = combined(key_hash, part(i));
    // Strictly better only, so among equal weights and equal ids the lower index stays.
    if (weight > best_weight || (weight == best_weight && workers[i] < workers[best])) {
      best = i;
      best_weight = weight;
    }
  }
  return best;
}

void require_workers(std::span<const std::string> workers, const char* function) {
  if (workers.empty())
    throw std::invalid_argument(std::string(function) +
                                ": no workers to choose from; pass at least one worker id (a key needs a live worker)");
}

}  // namespace

std::uint64_t rendezvous_weight(std::string_view key, std::string_view worker) noexcept {
  return combined(fnv1a64(key), worker_part(worker));
}

std::size_t rendezvous_pick(std::string_view key, std::span<const std::string> workers) {
  require_workers(workers, "rendezvous_pick");
  return highest(fnv1a64(key), workers, [&](std::size_t i) { return worker_part(workers[i]); });
}

void rendezvous_pick_all(std::span<const std::string> keys, std::span<const std::string> workers,
                         std::span<std::size_t> out) {
  require_workers(workers, "rendezvous_pick_all");
  if (out.size() != keys.size())
    throw std::invalid_argument("rendezvous_pick_all: out has " + std::to_string(out.size()) + " places for " +
                                std::to_string(keys.size()) + " keys; give it one place per key");
  std::vector<std::uint64_t> parts(workers.size());
  for (std::size_t i = 0; i < workers.size(); ++i) parts[i] = worker_part(workers[i]);
  for (std::size_t k = 0; k < keys.size(); ++k)
    out[k] = highest(fnv1a64(keys[k]), workers, [&](std::size_t i) { return parts[i]; });
}

}  // namespace scale::detail
