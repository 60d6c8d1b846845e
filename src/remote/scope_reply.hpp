#pragma once
// The payload of a scope_reply frame (process/worker_link.hpp): the parent's answer to one Scope
// call of a worker.
//
//   u8    0: the call returned; 1: it threw
//   rest  0: the value, MessagePack; 1: encode_exception() of what it threw

#include <exception>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace scale::detail {

/// The reply for a call that returned `value`.
std::string encode_scope_reply(const nlohmann::json& value);
/// The reply for a call that threw `error`.
std::string encode_scope_reply_error(const std::exception_ptr& error);

/// The value a reply carries; throws the error it carries, or scale::Error when it is malformed.
nlohmann::json decode_scope_reply(std::string_view payload);

}  // namespace scale::detail
