// How a cluster worker takes chunks from its build's class streams (cluster/chunk_reader.hpp).

#include "cluster/chunk_reader.hpp"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "cluster/redis_wait.hpp"
#include <scale/error.hpp>

namespace scale::detail {

namespace {

using Clock = std::chrono::steady_clock;
using Role = RedisClient::Role;

/// How long a blocking read waits, and how long a stream that answered NOGROUP is left out.
constexpr int block_ms = 200;
constexpr auto missing_for = std::chrono::seconds(1);

// KEYS: the streams, in the order of this turn. ARGV: group, consumer, room, R (how many amount
// names), the R free amounts, then R needs per stream (0: not needed). Takes one entry from each
// stream in turn while there is room and its needs fit what is left free; returns {{stream index
// (1-based), entry id, fields}...} and the indices of streams without the group.
const RedisScript& read_script() {
  static const RedisScript script(R"lua(
local group, consumer = ARGV[1], ARGV[2]
local room, r = tonumber(ARGV[3]), tonumber(ARGV[4])
local free = {}
for j = 1, r do free[j] = tonumber(ARGV[4 + j]) end
local function need(i, j) return tonumber(ARGV[4 + r + (i - 1) * r + j]) end
local function fits(i)
  for j = 1, r do
    if need(i, j) > free[j] + 1e-9 then return false end
  end
  return true
end
local taken, missing, open = {}, {}, {}
for i = 1, #KEYS do open[i] = true end
local more = true
while room > 0 and more do
  more = false
  for i = 1, #KEYS do
    if room == 0 then break end
    if open[i] and fits(i) then
      local got = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', KEYS[i], '>')
      if type(got) == 'table' and got.err then
        open[i] = false
        missing[#missing + 1] = i
      elseif got then
        local entry = got[1][2][1]
        taken[#taken + 1] = {i, entry[1], entry[2]}
        for j = 1, r do free[j] = free[j] - need(i, j) end
        room = room - 1
        more = true
      else
        open[i] = false
      end
    else
      open[i] = false
    end
  end
end
return {taken, missing}
)lua");
  return script;
}

/// An amount as Lua reads it back exactly.
std::string amount_text(double amount) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", amount);
  return text;
}

/// The stream or its group is gone: NOGROUP, or UNBLOCKED for a read that waited on a stream
/// deleted meanwhile (its manager went).
bool is_gone(const RedisReply& reply) {
  return reply.is_error() && (reply.str.starts_with("NOGROUP") || reply.str.starts_with("UNBLOCKED"));
}

}  // namespace

ChunkReader::ChunkReader(RedisClient& client, ClusterKeys keys, std::string fingerprint, std::string consumer)
    : m_client(client), m_keys(std::move(keys)), m_fingerprint(std::move(fingerprint)), m_consumer(std::move(consumer)) {}

void ChunkReader::set_directory(const RedisReply& fields) {
  std::map<std::string, ManagerClasses> directory;
  for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2)
    if (auto entry = decode_manager_classes(fields.elements[i + 1].str))
      directory.emplace(fields.elements[i].str, std::move(*entry));
  std::lock_guard lock(m_mutex);
  m_directory = std::move(directory);
  rebuild_locked();
}

void ChunkReader::set_provides(const Provides& provides) {
  std::lock_guard lock(m_mutex);
  m_provides = provides;
  rebuild_locked();
}

void ChunkReader::rebuild_locked() {
  auto served = std::make_shared<ServedList>();
  for (const auto& [manager, entry] : m_directory)
    for (const auto& [name, requirement] : entry.classes)
      if (requirement.met_by(m_provides))
        served->push_back(Served{m_keys.tasks(m_fingerprint, name, manager), requirement});
  std::sort(served->begin(), served->end(), [](const Served& a, const Served& b) { return a.stream < b.stream; });
  m_served = std::move(served);
}

void ChunkReader::refresh() {
  const RedisReply reply = wait_for_reply(m_client, Role::commands, {"HGETALL", m_keys.classes(m_fingerprint)});
  if (reply.type == RedisReply::Type::array) set_directory(reply);
}

std::vector<std::string> ChunkReader::streams_read() const {
  std::lock_guard lock(m_mutex);
  return {m_read_from.begin(), m_read_from.end()};
}

std::shared_ptr<const ChunkReader::ServedList> ChunkReader::served_now() const {
  std::lock_guard lock(m_mutex);
  return m_served;
}

bool ChunkReader::missing(const std::string& stream) {
  auto at = m_missing.find(stream);
  if (at == m_missing.end()) return false;
  if (Clock::now() < at->second) return true;
  m_missing.erase(at);
  return false;
}

std::vector<ChunkReader::Candidate> ChunkReader::candidates(const ServedList& served, std::size_t room,
                                                            HeldAmounts& amounts, bool& held_out) {
  held_out = false;
  std::vector<Candidate> out;
  if (served.empty()) return out;
  // This turn starts after the stream served last (the list is sorted by name).
  const auto first = std::upper_bound(served.begin(), served.end(), m_after,
                                      [](const std::string& after, const Served& s) { return after < s.stream; });
  const std::size_t start = static_cast<std::size_t>(first - served.begin());
  for (std::size_t k = 0; k < served.size(); ++k) {
    const Served& stream = served[(start + k) % served.size()];
    if (missing(stream.stream)) continue;
    const std::size_t fits =
        stream.requirement.resources.empty() ? room : amounts.room(stream.requirement.resources, room);
    if (fits > 0)
      out.push_back(Candidate{&stream, fits});
    else
      held_out = true;
  }
  return out;
}

std::vector<ReadChunk> ChunkReader::read(std::size_t room, HeldAmounts& amounts) {
  std::shared_ptr<const ServedList> served = served_now();
  if (served->empty()) {
    // Nothing known to serve (the worker just started, or no manager is there yet): look now.
    refresh();
    served = served_now();
  }
  bool held_out = false;
  std::vector<Candidate> streams = candidates(*served, room, amounts, held_out);
  preferred_first(streams);
  if (streams.empty()) {
    // Nothing to serve, or every class's amounts are held: wait for a chunk to end.
    amounts.wait_for_release(std::chrono::milliseconds(block_ms));
    return {};
  }
  if (streams.size() == 1) {
    std::vector<ReadChunk> chunks = read_blocking(streams, streams.front().room, held_out);
    if (chunks.empty()) refresh();
    return chunks;
  }
  std::vector<ReadChunk> chunks = read_by_script(streams, room, amounts);
  if (!chunks.empty()) return chunks;
  chunks = read_blocking(streams, 1, held_out);
  if (chunks.empty()) refresh();
  return chunks;
}

std::vector<ReadChunk> ChunkReader::read_blocking(const std::vector<Candidate>& streams, std::size_t count,
                                                  bool held_out) {
  std::vector<std::string> args{"XREADGROUP", "GROUP", cluster_group, m_consumer, "COUNT", std::to_string(count),
                                "BLOCK",      std::to_string(block_ms), "STREAMS"};
  for (const Candidate& candidate : streams) args.push_back(candidate.served->stream);
  args.insert(args.end(), streams.size(), ">");
  {
    std::lock_guard lock(m_mutex);
    for (const Candidate& candidate : streams) m_read_from.insert(candidate.served->stream);
  }
  if (held_out) {
    // NOTE: pipelined on the read's connection, so its answer names the connection the read waits
    // on; wake() may come before the read blocks, and that read then waits its 200 ms.
    m_client.send(Role::blocking, {"CLIENT", "ID"}, [this](std::exception_ptr error, RedisReply reply) {
      if (!error && reply.type == RedisReply::Type::integer) m_unblock_id.store(reply.integer);
    });
  }
  RedisReply reply = wait_for_reply(m_client, Role::blocking, std::move(args));
  m_unblock_id.store(0);
  if (is_gone(reply)) {
    // One stream's group is gone; the script finds which, so with one stream it is that one.
    if (streams.size() == 1) m_missing[streams.front().served->stream] = Clock::now() + missing_for;
    return {};
  }
  if (reply.is_error()) throw Error("Redis (" + m_client.url().text + ") answered XREADGROUP: " + reply.str);
  std::vector<ReadChunk> chunks;
  if (reply.type != RedisReply::Type::array) return chunks;  // nil: nothing came within the block
  for (RedisReply& stream : reply.elements) {
    if (stream.elements.size() != 2) continue;
    const Served* served = nullptr;
    for (const Candidate& candidate : streams)
      if (candidate.served->stream == stream.elements[0].str) served = candidate.served;
    if (!served) continue;
    for (RedisReply& entry : stream.elements[1].elements) {
      if (entry.elements.size() != 2) continue;
      // NOTE: moved, not copied: the fields hold the chunk's payload.
      chunks.push_back(ReadChunk{served->stream, std::move(entry.elements[0].str), std::move(entry.elements[1]),
                                 served->requirement.resources});
    }
    served_last(served->stream);
  }
  return chunks;
}

std::vector<ReadChunk> ChunkReader::read_by_script(const std::vector<Candidate>& streams, std::size_t room,
                                                   HeldAmounts& amounts) {
  // The amount names any of these streams needs, with what is free of each.
  std::vector<std::string> names;
  for (const Candidate& candidate : streams)
    for (const auto& [name, amount] : candidate.served->requirement.resources)
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  const HeldAmounts::Amounts free = amounts.free();
  std::vector<std::string> keys;
  std::vector<std::string> args{cluster_group, m_consumer, std::to_string(room), std::to_string(names.size())};
  for (const std::string& name : names) {
    const auto at = free.find(name);
    args.push_back(amount_text(at == free.end() ? 0.0 : at->second));
  }
  for (const Candidate& candidate : streams) {
    keys.push_back(candidate.served->stream);
    const auto& resources = candidate.served->requirement.resources;
    for (const std::string& name : names) {
      const auto at = resources.find(name);
      args.push_back(amount_text(at == resources.end() ? 0.0 : at->second));
    }
  }
  {
    std::lock_guard lock(m_mutex);
    m_read_from.insert(keys.begin(), keys.end());
  }
  RedisReply reply = wait_for_script(m_client, read_script(), std::move(keys), std::move(args));
  if (reply.is_error()) throw Error("Redis (" + m_client.url().text + ") answered the worker's read: " + reply.str);
  std::vector<ReadChunk> chunks;
  if (reply.elements.size() != 2) return chunks;
  for (const RedisReply& index : reply.elements[1].elements)
    if (index.integer >= 1 && static_cast<std::size_t>(index.integer) <= streams.size())
      m_missing[streams[static_cast<std::size_t>(index.integer - 1)].served->stream] = Clock::now() + missing_for;
  for (RedisReply& taken : reply.elements[0].elements) {
    if (taken.elements.size() != 3) continue;
    const std::int64_t index = taken.elements[0].integer;
    if (index < 1 || static_cast<std::size_t>(index) > streams.size()) continue;
    const Served& served = *streams[static_cast<std::size_t>(index - 1)].served;
    chunks.push_back(ReadChunk{served.stream, std::move(taken.elements[1].str), std::move(taken.elements[2]),
                               served.requirement.resources});
    served_last(served.stream);
  }
  return chunks;
}

void ChunkReader::wake() {
  const std::int64_t id = m_unblock_id.exchange(0);
  if (id != 0)
    m_client.send(Role::commands, {"CLIENT", "UNBLOCK", std::to_string(id)}, [](std::exception_ptr, RedisReply) {});
}

void ChunkReader::prefer(std::string manager_id) {
  std::lock_guard lock(m_mutex);
  m_preferred_suffix = manager_id.empty() ? std::string() : ":" + manager_id;
}

void ChunkReader::preferred_first(std::vector<Candidate>& streams) const {
  if (streams.size() < 2) return;
  std::string suffix;
  {
    std::lock_guard lock(m_mutex);
    if (m_preferred_suffix.empty()) return;
    suffix = m_preferred_suffix;
  }
  // NOTE: a stream's key ends with ":<manager id>" (cluster/keys.hpp), and ids are unique.
  std::stable_partition(streams.begin(), streams.end(),
                        [&](const Candidate& candidate) { return candidate.served->stream.ends_with(suffix); });
}

void ChunkReader::served_last(const std::string& stream) { m_after = stream; }

}  // namespace scale::detail
