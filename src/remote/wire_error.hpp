#pragma once
// The one wire form of an error, shared by every tier that carries one: the process link's error
// and scope_reply frames, the cluster's result stream ("e" entries) and the store server's 4xx
// answers and SSE error events.
//
// An error on the wire is a JSON object {"type": id, "error": message, ...}: `id` is the class
// name without "scale::" for the library's own error types ("KeyNotFound", "TypeMismatch",
// "Compacted", "WorkerLost", "RemoteError", "NotShippable", ...), plus the fields that rebuild it:
//   KeyNotFound   "key"
//   TypeMismatch  "key", "stored", "requested"
//   Compacted     "requested", "oldest_kept"
//   WorkerLost    "index", "status", "attempts", and "capsule" when it has one (crash_report_to_json)
//   RemoteError   "remote_type", "remote_message"
// An exception that is not exactly one of those types (std::out_of_range, a user's own class,
// including one derived from scale::Error) goes as a RemoteError carrying its demangled type
// name and what(): the receiver cannot construct a type it does not know. error_from_json() is
// the one function that maps the wire form back to an exception of its type; an id it does not
// know becomes a RemoteError(id, message).

#include <exception>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <scale/crash_report.hpp>

namespace scale::detail {

/// A crash capsule's wire form: {"signal", "signal_name", "item_index", "item", "stack" (an array
/// of strings), "host", "pid"}.
nlohmann::json crash_report_to_json(const CrashReport& report);
/// The capsule of crash_report_to_json(); throws scale::Error when a field is missing or of
/// another type.
CrashReport crash_report_from_json(const nlohmann::json& wire);

/// The wire form of `error` (see above); a null `error` is a RemoteError of "(no exception)".
nlohmann::json error_to_json(const std::exception_ptr& error);

/// The exception the wire form describes, of its type. Throws scale::Error when `wire` is not an
/// object with a string "type" and "error" (a peer of another build, or not ours).
std::exception_ptr error_from_json(const nlohmann::json& wire);

/// Appends error_to_json(error) as MessagePack: the payload of an error frame, a scope_reply's
/// failure, a cluster result's "e" entry.
void encode_exception(const std::exception_ptr& error, std::string& out);

/// error_from_json() of a payload encode_exception() wrote. Throws scale::Error when malformed.
std::exception_ptr decode_exception(std::string_view payload);

}  // namespace scale::detail
