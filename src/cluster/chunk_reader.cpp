// How a cluster worker takes chunks from its build's class streams (cluster/chunk_reader.hpp).

#include "cluster/chunk_reader.hpp"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "cluster/redis_wait.hpp"
#include "core/rendezvous.hpp"
#include <scale/detail/loop.hpp>
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
  std::vector<std::string> tags;             // the tags served, numbered as met
  std::map<std::size_t, std::string> homes;  // this worker's home tag, by a manager's shard count
  for (const auto& [manager, entry] : m_directory) {
    if (m_refused.count(manager) != 0) continue;  // its setup threw here
    const std::size_t count = entry.shards;
    if (count != m_keys.shards && m_told_shards.insert(manager).second)
      log_error("worker " + m_consumer + ": manager " + manager + " spreads its task streams over " +
                std::to_string(count) + " shard(s) (?shards=" + std::to_string(count) + ") and this worker's URL says " +
                std::to_string(m_keys.shards) +
                "; the worker reads that manager's streams where the manager puts them, with its home shard among "
                "them. Give the managers and the workers the same ?shards= so every shard has workers blocked on it");
    auto home = homes.find(count);
    if (home == homes.end()) home = homes.emplace(count, home_tag(count)).first;
    for (const auto& [name, requirement] : entry.classes) {
      if (!requirement.met_by(m_provides)) continue;
      for (std::size_t shard = 0; shard < count; ++shard) {
        const std::string tag = m_keys.shard_tag(shard, count);
        auto known = std::find(tags.begin(), tags.end(), tag);
        if (known == tags.end()) known = tags.insert(tags.end(), tag);
        Served stream{m_keys.tasks(m_fingerprint, name, manager, shard, count), requirement};
        stream.shard = static_cast<std::size_t>(known - tags.begin());
        stream.home = tag == home->second;
        served->push_back(std::move(stream));
      }
    }
  }
  std::sort(served->begin(), served->end(), [](const Served& a, const Served& b) { return a.stream < b.stream; });
  m_served = std::move(served);
}

std::string ChunkReader::home_tag(std::size_t count) const {
  if (count <= 1) return m_keys.tag;
  std::vector<std::string> tags;
  for (std::size_t shard = 0; shard < count; ++shard) tags.push_back(m_keys.shard_tag(shard, count));
  return tags[rendezvous_pick(m_consumer, tags)];
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
    // Nothing to serve, or every class's amounts are held: wait for a chunk to end, or for one on
    // the watched stream.
    if (!m_watch.empty() && m_watch_present.load(std::memory_order_relaxed)) return read_blocking(streams, room, held_out);
    amounts.wait_for_release(std::chrono::milliseconds(block_ms));
    return {};
  }
  const std::size_t shard = streams.front().served->shard;
  if (std::any_of(streams.begin(), streams.end(), [&](const Candidate& c) { return c.served->shard != shard; }))
    return read_shards(streams, room, amounts, held_out);
  if (streams.size() == 1) {
    std::vector<ReadChunk> chunks = read_blocking(streams, streams.front().room, held_out);
    if (chunks.empty()) refresh();
    return chunks;
  }
  HeldAmounts::Amounts free = amounts.free();
  std::vector<ReadChunk> chunks = read_by_script(streams, room, free);
  if (!chunks.empty()) return chunks;
  chunks = read_blocking(streams, 1, held_out);
  if (chunks.empty()) refresh();
  return chunks;
}

std::vector<ReadChunk> ChunkReader::read_shards(const std::vector<Candidate>& streams, std::size_t room,
                                                HeldAmounts& amounts, bool held_out) {
  // The candidates by shard, each shard's in this turn's order: first the shard that gave the
  // last chunk (while it has work, a busy worker keeps reading it instead of paying a round trip
  // per empty shard before it), then the home shard, then the others as this turn meets them.
  std::vector<std::vector<Candidate>> shards;
  std::vector<std::size_t> order;  // shard number of each entry of `shards`
  for (const Candidate& candidate : streams) {
    auto at = std::find(order.begin(), order.end(), candidate.served->shard);
    if (at == order.end()) {
      order.push_back(candidate.served->shard);
      shards.emplace_back();
      at = order.end() - 1;
    }
    shards[static_cast<std::size_t>(at - order.begin())].push_back(candidate);
  }
  auto index_of = [&](auto&& wanted) {
    const auto at = std::find_if(shards.begin(), shards.end(), wanted);
    return static_cast<std::size_t>(at - shards.begin());  // shards.size(): none
  };
  const std::size_t home = index_of([](const std::vector<Candidate>& shard) { return shard.front().served->home; });
  const std::size_t last = index_of([this](const std::vector<Candidate>& shard) {
    return std::any_of(shard.begin(), shard.end(), [this](const Candidate& c) { return c.served->stream == m_after; });
  });
  std::vector<std::size_t> visit;
  if (last < shards.size()) visit.push_back(last);
  if (home < shards.size() && home != last) visit.push_back(home);
  for (std::size_t i = 0; i < shards.size(); ++i)
    if (i != last && i != home) visit.push_back(i);

  HeldAmounts::Amounts free = amounts.free();
  std::vector<ReadChunk> chunks;
  for (const std::size_t i : visit) {
    if (chunks.size() >= room) break;
    std::vector<ReadChunk> got = read_shard_now(shards[i], room - chunks.size(), free);
    for (ReadChunk& chunk : got) chunks.push_back(std::move(chunk));
  }
  if (!chunks.empty()) return chunks;
  // Every shard was empty: block on the home shard alone (on the first, should none be home).
  const std::vector<Candidate>& blocked_on = shards[home < shards.size() ? home : visit.front()];
  chunks = read_blocking(blocked_on, blocked_on.size() == 1 ? blocked_on.front().room : 1, held_out);
  if (chunks.empty()) refresh();
  return chunks;
}

std::vector<ReadChunk> ChunkReader::read_shard_now(const std::vector<Candidate>& streams, std::size_t room,
                                                   HeldAmounts::Amounts& free) {
  const Candidate& only = streams.front();
  if (streams.size() > 1 || !only.served->requirement.resources.empty()) return read_by_script(streams, room, free);
  // One stream whose chunks need nothing (a map on a sharded manager): a plain read.
  {
    std::lock_guard lock(m_mutex);
    m_read_from.insert(only.served->stream);
  }
  RedisReply reply =
      wait_for_reply(m_client, Role::commands,
                     {"XREADGROUP", "GROUP", cluster_group, m_consumer, "COUNT", std::to_string(std::min(room, only.room)),
                      "STREAMS", only.served->stream, ">"});
  if (is_gone(reply)) {
    m_missing[only.served->stream] = Clock::now() + missing_for;
    return {};
  }
  if (reply.is_error()) throw Error("Redis (" + m_client.url().text + ") answered XREADGROUP: " + reply.str);
  return entries_of(reply, streams);
}

std::vector<ReadChunk> ChunkReader::read_blocking(const std::vector<Candidate>& streams, std::size_t count,
                                                  bool held_out) {
  std::vector<std::string> args{"XREADGROUP", "GROUP", cluster_group, m_consumer, "COUNT", std::to_string(count),
                                "BLOCK",      std::to_string(block_ms), "STREAMS"};
  for (const Candidate& candidate : streams) args.push_back(candidate.served->stream);
  // NOTE: one more key in a read sent anyway: nothing more for a worker whose stream stays empty.
  // Only beside streams under the main tag: a shard's streams may sit on another Redis Cluster
  // node (CROSSSLOT); a sharded worker reads its own stream first itself, while it has entries.
  const bool watched = !m_watch.empty() && m_watch_present.load(std::memory_order_relaxed) &&
                       (streams.empty() || streams.front().served->stream.compare(0, m_keys.tag.size(), m_keys.tag) == 0);
  if (watched) args.push_back(m_watch);
  args.insert(args.end(), streams.size() + (watched ? 1 : 0), ">");
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
    // One stream's group is gone; the script finds which, so with one stream it is that one. The
    // watched one is left out until the worker says it is back, and then the read tells.
    if (watched) {
      m_watch_present.store(false, std::memory_order_relaxed);
      return {};
    }
    if (streams.size() == 1) m_missing[streams.front().served->stream] = Clock::now() + missing_for;
    return {};
  }
  if (reply.is_error()) throw Error("Redis (" + m_client.url().text + ") answered XREADGROUP: " + reply.str);
  return entries_of(reply, streams);
}

std::vector<ReadChunk> ChunkReader::entries_of(RedisReply& reply, const std::vector<Candidate>& streams) {
  std::vector<ReadChunk> chunks;
  if (reply.type != RedisReply::Type::array) return chunks;  // nil: nothing came (within the block)
  for (RedisReply& stream : reply.elements) {
    if (stream.elements.size() != 2) continue;
    if (!m_watch.empty() && stream.elements[0].str == m_watch) {
      for (RedisReply& entry : stream.elements[1].elements)
        if (entry.elements.size() == 2)
          chunks.push_back(ReadChunk{m_watch, std::move(entry.elements[0].str), std::move(entry.elements[1]), {}});
      continue;
    }
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
                                                   HeldAmounts::Amounts& free) {
  // The amount names any of these streams needs, with what is free of each.
  std::vector<std::string> names;
  for (const Candidate& candidate : streams)
    for (const auto& [name, amount] : candidate.served->requirement.resources)
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
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
    for (const auto& [name, amount] : served.requirement.resources) free[name] -= amount;
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

void ChunkReader::watch(std::string stream) { m_watch = std::move(stream); }

void ChunkReader::refuse_manager(const std::string& manager) {
  std::lock_guard lock(m_mutex);
  m_refused.insert(manager);
  rebuild_locked();
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
