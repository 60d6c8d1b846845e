// The shapes of Redis commands, as far as routing goes (src/redis/command_key.hpp says why a table).

#include "redis/command_key.hpp"

#include <algorithm>
#include <iterator>
#include <cctype>
#include <charconv>

namespace scale::detail {
namespace {

// Sorted, upper case: commands that name no key.
constexpr std::string_view keyless[] = {
    "ACL",          "ASKING",   "AUTH",      "BGREWRITEAOF", "BGSAVE",      "CLIENT",   "CLUSTER",   "COMMAND",
    "CONFIG",       "DBSIZE",   "DEBUG",     "DISCARD",      "ECHO",        "EXEC",     "FAILOVER",  "FLUSHALL",
    "FLUSHDB",      "FUNCTION", "HELLO",     "INFO",         "KEYS",        "LASTSAVE", "LATENCY",   "LOLWUT",
    "MODULE",       "MONITOR",  "MULTI",     "PING",         "PSUBSCRIBE",  "PSYNC",    "PUBLISH",   "PUBSUB",
    "PUNSUBSCRIBE", "QUIT",     "RANDOMKEY", "READONLY",     "READWRITE",   "REPLCONF", "REPLICAOF", "RESET",
    "ROLE",         "SAVE",     "SCAN",      "SCRIPT",       "SELECT",      "SHUTDOWN", "SLAVEOF",   "SLOWLOG",
    "SUBSCRIBE",    "SWAPDB",   "SYNC",      "TIME",         "UNSUBSCRIBE", "UNWATCH",  "WAIT",      "WAITAOF",
};

// Commands whose key follows a subcommand: XGROUP CREATE key ..., XINFO STREAM key, OBJECT
// ENCODING key, MEMORY USAGE key.
constexpr std::string_view after_subcommand[] = {"MEMORY", "OBJECT", "XGROUP", "XINFO"};

// Commands whose first key follows a key count: the count's position.
struct Counted {
  std::string_view name;
  std::size_t count_at;
};
constexpr Counted counted[] = {{"BLMPOP", 2},  {"BZMPOP", 2}, {"EVAL", 2},       {"EVALSHA", 2}, {"EVALSHA_RO", 2},
                               {"EVAL_RO", 2}, {"FCALL", 2},  {"FCALL_RO", 2},   {"LMPOP", 1},   {"SINTERCARD", 1},
                               {"ZDIFF", 1},   {"ZINTER", 1}, {"ZINTERCARD", 1}, {"ZMPOP", 1},   {"ZUNION", 1}};

static_assert(std::is_sorted(std::begin(keyless), std::end(keyless)));
static_assert(std::is_sorted(std::begin(after_subcommand), std::end(after_subcommand)));
static_assert(std::is_sorted(std::begin(counted), std::end(counted),
                             [](const Counted& a, const Counted& b) { return a.name < b.name; }));

std::string upper(std::string_view text) {
  std::string out(text);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::optional<std::string_view> routing_key(const std::vector<std::string>& args) {
  if (args.size() < 2) return std::nullopt;
  const std::string name = upper(args[0]);
  if (std::binary_search(std::begin(keyless), std::end(keyless), std::string_view(name))) return std::nullopt;
  if (std::binary_search(std::begin(after_subcommand), std::end(after_subcommand), std::string_view(name))) {
    if (args.size() < 3) return std::nullopt;  // XGROUP HELP, MEMORY STATS, ...
    if (name == "MEMORY" && upper(args[1]) != "USAGE") return std::nullopt;
    return std::string_view(args[2]);
  }
  auto found = std::lower_bound(std::begin(counted), std::end(counted), std::string_view(name),
                                [](const Counted& entry, std::string_view wanted) { return entry.name < wanted; });
  if (found != std::end(counted) && found->name == name) {
    const auto at = found->count_at;
    if (args.size() <= at + 1) return std::nullopt;
    long count = 0;
    const auto& text = args[at];
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), count);
    if (error != std::errc() || count <= 0) return std::nullopt;  // no keys (EVAL script 0 ...)
    return std::string_view(args[at + 1]);
  }
  if (name == "XREAD" || name == "XREADGROUP") {
    for (std::size_t i = 1; i + 1 < args.size(); ++i)
      if (upper(args[i]) == "STREAMS") return std::string_view(args[i + 1]);
    return std::nullopt;
  }
  return std::string_view(args[1]);
}

}  // namespace scale::detail
