// Reading CLUSTER SLOTS: [[first, last, [endpoint, port, id, ...], replica...], ...]
// (src/redis/cluster_slots.hpp).

#include "redis/cluster_slots.hpp"

#include "redis/hash_slot.hpp"
#include <scale/error.hpp>

namespace scale::detail {

std::vector<SlotRange> parse_cluster_slots(const RedisReply& reply) {
  auto bad = [] { return Error("scale: unexpected answer from Redis to CLUSTER SLOTS"); };
  if (reply.type != RedisReply::Type::array) throw bad();
  std::vector<SlotRange> ranges;
  ranges.reserve(reply.elements.size());
  for (const auto& item : reply.elements) {
    if (item.type != RedisReply::Type::array || item.elements.size() < 3) throw bad();
    const auto& first = item.elements[0];
    const auto& last = item.elements[1];
    const auto& master = item.elements[2];
    if (first.type != RedisReply::Type::integer || last.type != RedisReply::Type::integer ||
        master.type != RedisReply::Type::array || master.elements.size() < 2 ||
        master.elements[1].type != RedisReply::Type::integer)
      throw bad();
    if (first.integer < 0 || last.integer < first.integer || last.integer >= redis_hash_slots) throw bad();
    SlotRange range;
    range.first = static_cast<int>(first.integer);
    range.last = static_cast<int>(last.integer);
    range.host = master.elements[0].is_nil() ? std::string() : master.elements[0].str;
    if (range.host == "?") range.host.clear();  // a hostname endpoint with no hostname set
    range.port = std::to_string(master.elements[1].integer);
    ranges.push_back(std::move(range));
  }
  return ranges;
}

}  // namespace scale::detail
