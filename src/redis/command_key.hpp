#pragma once
// Which argument of a Redis command is the key it is routed by in a Redis Cluster. Redis itself
// knows every command's key positions (COMMAND INFO); asking it would cost a round trip per
// command name, so the client keeps the few shapes the commands come in: most take their key
// first; some take none (PING, PUBLISH, CLUSTER, ...); a container command names it after a
// subcommand (XGROUP CREATE key, XINFO STREAM key); scripts and the *MPOP/*INTER family name it
// after a key count (EVALSHA sha 2 key ...); XREAD names it after STREAMS.
// A command with several keys is routed by its first; Redis refuses one whose keys lie in
// different slots (CROSSSLOT), which the client reports as such.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace scale::detail {

/// The key that decides where `args` (a command and its arguments) runs in a Redis Cluster, or
/// nullopt for a command without keys (sent to the node of the URL).
std::optional<std::string_view> routing_key(const std::vector<std::string>& args);

}  // namespace scale::detail
