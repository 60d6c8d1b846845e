// A ClusterManager's task streams per requirement class (cluster/class_streams.hpp).

#include "cluster/class_streams.hpp"

#include <algorithm>
#include <utility>

#include "cluster/class_directory.hpp"

namespace scale::detail {

namespace {

using Role = RedisClient::Role;

void ignore(std::exception_ptr, RedisReply) {}

/// Gone managers' directory fields are looked for at every this many renewals (scans).
constexpr unsigned forget_every = 10;

}  // namespace

ClassStreams::ClassStreams(ClusterKeys keys, std::string fingerprint, std::string manager, std::string site)
    : m_keys(std::move(keys)),
      m_fingerprint(std::move(fingerprint)),
      m_manager(std::move(manager)),
      m_site(std::move(site)),
      m_directory(m_keys.classes(m_fingerprint)),
      m_any(make(any_class, Requirement{})) {}

ClassStreams::Shards ClassStreams::make(const std::string& name, const Requirement& requirement) const {
  Shards shards;
  for (std::size_t shard = 0; shard < m_keys.shards; ++shard) {
    auto stream = std::make_shared<ClassStream>();
    stream->name = name;
    stream->key = m_keys.tasks(m_fingerprint, name, m_manager, shard, m_keys.shards);
    stream->requirement = requirement;
    shards.streams.push_back(std::move(stream));
  }
  return shards;
}

const std::shared_ptr<ClassStream>& ClassStreams::of(RedisClient& client, const Requirement& requirement,
                                                     Clock::time_point now) {
  if (!m_last || !(m_last->streams.front()->requirement == requirement)) {
    const std::string name = class_name(requirement);
    auto at = m_classes.find(name);
    if (at == m_classes.end()) {
      at = m_classes.emplace(name, make(name, requirement)).first;
      for (const auto& stream : at->second.streams) create_group(client, *stream);
      publish(client);
    }
    m_last = &at->second;
  }
  m_last->last_used = now;
  return m_last->next();
}

std::vector<std::shared_ptr<ClassStream>> ClassStreams::all() const {
  std::vector<std::shared_ptr<ClassStream>> out = m_any.streams;
  for (const auto& [name, shards] : m_classes) out.insert(out.end(), shards.streams.begin(), shards.streams.end());
  return out;
}

void ClassStreams::create_group(RedisClient& client, const ClassStream& stream) const {
  // NOTE: from the stream's start, so chunks queued before any worker came wait there; BUSYGROUP
  // (made already) is fine.
  client.send(Role::commands, {"XGROUP", "CREATE", stream.key, cluster_group, "0", "MKSTREAM"}, ignore);
}

void ClassStreams::publish(RedisClient& client) const {
  ManagerClasses entry;
  entry.site = m_site;
  entry.shards = m_keys.shards;
  entry.classes.emplace(any_class, Requirement{});
  for (const auto& [name, shards] : m_classes) entry.classes.emplace(name, shards.streams.front()->requirement);
  client.send(Role::commands, {"HSET", m_directory, m_manager, encode_manager_classes(entry)}, ignore);
}

void ClassStreams::prepare(RedisClient& client) {
  for (const auto& stream : all()) create_group(client, *stream);
  publish(client);
}

void ClassStreams::renew(RedisClient& client, std::int64_t ttl_ms, const std::set<const ClassStream*>& in_use,
                         Clock::time_point now, Clock::duration idle) {
  bool dropped = false;
  for (auto at = m_classes.begin(); at != m_classes.end();) {
    const Shards& shards = at->second;
    const bool used = std::any_of(shards.streams.begin(), shards.streams.end(),
                                  [&](const auto& stream) { return in_use.count(stream.get()) != 0; });
    if (used || now - shards.last_used < idle) {
      ++at;
      continue;
    }
    for (const auto& stream : shards.streams) client.send(Role::commands, {"DEL", stream->key}, ignore);
    if (m_last == &at->second) m_last = nullptr;
    at = m_classes.erase(at);
    dropped = true;
  }
  if (dropped) publish(client);
  const std::string ttl = std::to_string(ttl_ms);
  for (const auto& stream : all()) client.send(Role::commands, {"PEXPIRE", stream->key, ttl}, ignore);
  client.send(Role::commands, {"PEXPIRE", m_directory, ttl}, ignore);
  if (++m_renewals % forget_every == 0) forget_gone_managers(client);
}

void ClassStreams::forget_gone_managers(RedisClient& client) const {
  // A manager's result stream lives while it does (renewed at its every scan): without it, its
  // field names streams that are gone or going.
  client.send(Role::commands, {"HKEYS", m_directory},
              [&client, directory = m_directory, keys = m_keys, self = m_manager](std::exception_ptr error,
                                                                                   RedisReply reply) {
                if (error || reply.type != RedisReply::Type::array) return;
                for (const RedisReply& field : reply.elements) {
                  if (field.str == self) continue;
                  client.send(Role::commands, {"EXISTS", keys.results(field.str)},
                              [&client, directory, manager = field.str](std::exception_ptr error, RedisReply reply) {
                                if (error || reply.type != RedisReply::Type::integer || reply.integer != 0) return;
                                client.send(Role::commands, {"HDEL", directory, manager}, ignore);
                              });
                }
              });
}

void ClassStreams::remove_all(RedisClient& client) {
  for (const auto& stream : all()) client.send(Role::commands, {"DEL", stream->key}, ignore);
  client.send(Role::commands, {"HDEL", m_directory, m_manager}, ignore);
}

}  // namespace scale::detail
