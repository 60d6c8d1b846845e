#pragma once
// The parent's side of a worker's Scope: it answers one scope_request (MessagePack
// {"op": "set" | "entry" | "erase" | "cas" | "increment" | "list" | "emit", ...}, as
// process/link_backends.cpp sends it) from the real memory and emitter of the task's call.

#include <string>
#include <string_view>

namespace scale {

class SharedMemory;
class SharedEventEmitter;

namespace detail {

/// The scope_reply payload (remote/scope_reply.hpp) for `request`: its value, or what failed.
/// `memory` and `events` may be null (the call has no scope).
/// Blocks until the call completes, so never on the loop thread.
std::string answer_scope_request(SharedMemory* memory, SharedEventEmitter* events, std::string_view request);

}  // namespace detail
}  // namespace scale
