#pragma once
// What a Redis Cluster node answers for a key it does not serve (Redis Cluster specification,
// "Redirection and resharding"):
//   -MOVED <slot> <endpoint>:<port>  the slot lives on that node: remember it, send it there;
//   -ASK <slot> <endpoint>:<port>    the slot is being migrated and the key may be there already:
//                                    send ASKING, then the command, to that node, this once;
//   -TRYAGAIN ...                    a multi-key command met a slot whose keys are half migrated:
//                                    send it again a little later.
// An empty endpoint (Redis 7's cluster-preferred-endpoint-type unknown-endpoint), or "?" (a
// hostname endpoint on a node with no hostname set), means the host of the node that answered.

#include <optional>
#include <string>
#include <string_view>

namespace scale::detail {

struct Redirection {
  enum class Kind { moved, ask, tryagain };
  Kind kind = Kind::moved;
  int slot = -1;     // MOVED and ASK
  std::string host;  // empty: the host of the node that answered
  std::string port;
};

/// The redirection a Redis error reply asks for, or nullopt for any other error (a MOVED or ASK
/// whose slot or address does not parse is left as the error it is).
std::optional<Redirection> parse_redirection(std::string_view error);

}  // namespace scale::detail
