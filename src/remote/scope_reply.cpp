// The scope_reply payload (remote/scope_reply.hpp).

#include "remote/scope_reply.hpp"

#include <scale/detail/bytes.hpp>
#include <scale/error.hpp>

#include "remote/wire_error.hpp"

namespace scale::detail {

namespace {

constexpr std::uint8_t returned = 0;
constexpr std::uint8_t threw = 1;

}  // namespace

std::string encode_scope_reply(const nlohmann::json& value) {
  std::string reply;
  ByteWriter(reply).u8(returned);
  nlohmann::json::to_msgpack(value, reply);
  return reply;
}

std::string encode_scope_reply_error(const std::exception_ptr& error) {
  std::string reply;
  ByteWriter(reply).u8(threw);
  encode_exception(error, reply);
  return reply;
}

nlohmann::json decode_scope_reply(std::string_view payload) {
  ByteReader reader(payload, "a scope reply");
  const std::uint8_t status = reader.u8();
  const std::string_view rest = reader.rest();
  if (status == returned) return nlohmann::json::from_msgpack(rest.begin(), rest.end(), /*strict=*/true);
  std::rethrow_exception(decode_exception(rest));
}

}  // namespace scale::detail
