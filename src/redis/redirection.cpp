// Parsing -MOVED, -ASK and -TRYAGAIN (src/redis/redirection.hpp).

#include "redis/redirection.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "redis/hash_slot.hpp"

namespace scale::detail {

std::optional<Redirection> parse_redirection(std::string_view error) {
  Redirection redirection;
  std::string_view rest;
  if (error.starts_with("MOVED ")) {
    redirection.kind = Redirection::Kind::moved;
    rest = error.substr(6);
  } else if (error.starts_with("ASK ")) {
    redirection.kind = Redirection::Kind::ask;
    rest = error.substr(4);
  } else if (error.starts_with("TRYAGAIN")) {
    redirection.kind = Redirection::Kind::tryagain;
    return redirection;
  } else {
    return std::nullopt;
  }
  auto space = rest.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  auto slot_text = rest.substr(0, space);
  auto [end, failed] = std::from_chars(slot_text.data(), slot_text.data() + slot_text.size(), redirection.slot);
  if (failed != std::errc() || end != slot_text.data() + slot_text.size() || redirection.slot < 0 ||
      redirection.slot >= redis_hash_slots)
    return std::nullopt;
  auto address = rest.substr(space + 1);
  if (auto trailing = address.find(' '); trailing != std::string_view::npos) address = address.substr(0, trailing);
  auto colon = address.rfind(':');  // the last one: an IPv6 address has colons of its own
  if (colon == std::string_view::npos) return std::nullopt;
  auto port = address.substr(colon + 1);
  if (port.empty() ||
      !std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return std::nullopt;
  redirection.host = std::string(address.substr(0, colon));
  if (redirection.host == "?") redirection.host.clear();  // a hostname endpoint with no hostname set
  if (redirection.host.size() >= 2 && redirection.host.front() == '[' && redirection.host.back() == ']')
    redirection.host = redirection.host.substr(1, redirection.host.size() - 2);
  redirection.port = std::string(port);
  return redirection;
}

}  // namespace scale::detail
