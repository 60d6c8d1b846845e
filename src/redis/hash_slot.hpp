#pragma once
// Where Redis Cluster puts a key: CRC16/XMODEM of the key's hash tag (or of the whole key), mod
// 16384, as the Redis Cluster specification defines it ("Keys distribution model" and "Hash tags").
// The client computes a slot only once the server has shown itself to be a cluster (a MOVED or
// ASK reply), so a standalone Redis never pays for it.

#include <cstdint>
#include <string_view>

namespace scale::detail {

/// The number of hash slots of every Redis Cluster.
inline constexpr int redis_hash_slots = 16384;

/// CRC16/XMODEM: polynomial 0x1021, initial value 0, no reflection, no final xor
/// ("123456789" gives 0x31C3).
std::uint16_t crc16_xmodem(std::string_view bytes) noexcept;

/// The part of a key that Redis Cluster hashes: what lies between the first '{' and the first '}'
/// after it, when that is not empty; otherwise the whole key.
std::string_view redis_hash_tag(std::string_view key) noexcept;

/// The hash slot of a key, 0 to 16383.
int redis_hash_slot(std::string_view key) noexcept;

}  // namespace scale::detail
