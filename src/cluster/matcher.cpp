// The leased matcher of a ClusterManager (cluster/matcher.hpp).

#include "cluster/matcher.hpp"

#include <exception>
#include <utility>

#include "cluster/class_directory.hpp"
#include "cluster/worker_record.hpp"

namespace scale::detail {

namespace {

using Role = RedisClient::Role;

void ignore(std::exception_ptr, RedisReply) {}

// KEYS: the lease. ARGV: this manager's id, the lease in ms. 1 when this manager holds it now.
const RedisScript& take_or_renew_script() {
  static const RedisScript script(R"lua(
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
)lua");
  return script;
}

// KEYS: the lease. ARGV: this manager's id. Deletes the lease only if this manager holds it.
const RedisScript& release_script() {
  static const RedisScript script(R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua");
  return script;
}

/// A field of an HGETALL reply, by field name.
std::map<std::string, std::string> fields_of(const RedisReply& reply) {
  std::map<std::string, std::string> out;
  for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2) out.emplace(reply.elements[i].str, reply.elements[i + 1].str);
  return out;
}

}  // namespace

Matcher::Matcher(RedisClient& client, ClusterKeys keys, std::string fingerprint, std::string manager, std::string host,
                 std::string site, std::chrono::milliseconds scan_period)
    : m_client(client),
      m_keys(std::move(keys)),
      m_fingerprint(std::move(fingerprint)),
      m_manager(std::move(manager)),
      m_period(scan_period),
      m_demand_key(m_keys.demand(m_fingerprint)) {
  m_demand.host = std::move(host);
  m_demand.site = std::move(site);
}

void Matcher::scan(std::map<std::string, std::size_t> queued, double share, std::set<std::string> live) {
  if (m_left.load()) return;
  m_demand.queued = std::move(queued);
  m_demand.share = share;
  m_demand.writes = ++m_writes;
  m_client.send(Role::commands, {"HSET", m_demand_key, m_manager, encode_manager_demand(m_demand)}, ignore);
  m_client.send(Role::commands, {"PEXPIRE", m_demand_key, std::to_string(demand_ttl.count())}, ignore);
  auto workers = std::make_shared<const std::set<std::string>>(std::move(live));
  m_client.eval(take_or_renew_script(), {m_keys.matcher()}, {m_manager, std::to_string(lease.count())},
                [this, workers](std::exception_ptr error, RedisReply reply) {
                  lease_answered(!error && reply.type == RedisReply::Type::integer && reply.integer == 1, workers);
                });
}

void Matcher::lease_answered(bool held, std::shared_ptr<const std::set<std::string>> live) {
  if (!held || m_left.load()) {
    m_seen.clear();  // a later term starts its staleness count afresh
    return;
  }
  m_client.send(Role::commands, {"HGETALL", m_demand_key}, [this, live](std::exception_ptr error, RedisReply reply) {
    if (!error && reply.type == RedisReply::Type::array) demands_read(reply, live);
  });
}

void Matcher::demands_read(const RedisReply& fields, std::shared_ptr<const std::set<std::string>> live) {
  if (m_left.load()) return;
  const auto now = std::chrono::steady_clock::now();
  std::map<std::string, ManagerDemand> demands;
  std::size_t waiting = 0;
  for (auto& [id, text] : fields_of(fields)) {
    std::optional<ManagerDemand> demand = decode_manager_demand(text);
    if (!demand) continue;
    if (id != m_manager) {
      auto [at, first] = m_seen.try_emplace(id, Seen{demand->writes, now});
      Seen& seen = at->second;
      if (first || demand->writes != seen.writes) {
        seen.writes = demand->writes;
        seen.moved_at = now;
      } else if (now - seen.moved_at > lease) {
        // Its manager stopped writing: killed, or cut off from Redis. It serves no one now.
        m_client.send(Role::commands, {"HDEL", m_demand_key, id}, ignore);
        m_seen.erase(id);
        continue;
      }
    }
    if (demand->total() > 0) ++waiting;
    demands.emplace(id, std::move(*demand));
  }
  std::erase_if(m_seen, [&](const auto& item) { return demands.count(item.first) == 0; });
  if (waiting < 2) return;
  // NOTE: both replies come in order on the commands connection: the directory's callback runs
  // after the registry's has stored it.
  auto registry = std::make_shared<RedisReply>();
  m_client.send(Role::commands, {"HGETALL", m_keys.workers()}, [registry](std::exception_ptr error, RedisReply reply) {
    if (!error && reply.type == RedisReply::Type::array) *registry = std::move(reply);
  });
  m_client.send(Role::commands, {"HGETALL", m_keys.classes(m_fingerprint)},
                [this, registry, live, demands = std::move(demands)](std::exception_ptr error, RedisReply reply) {
                  if (!error && reply.type == RedisReply::Type::array) match(demands, *registry, reply, *live);
                });
}

void Matcher::match(const std::map<std::string, ManagerDemand>& demands, const RedisReply& registry,
                    const RedisReply& directory, const std::set<std::string>& live) {
  if (m_left.load()) return;
  std::map<std::string, ManagerClasses> classes;
  for (auto& [id, text] : fields_of(directory))
    if (auto entry = decode_manager_classes(text)) classes.emplace(id, std::move(*entry));
  std::vector<IdleWorker> idle;
  for (auto& [id, text] : fields_of(registry)) {
    if (live.count(id) == 0) continue;
    const std::optional<WorkerRecord> record = decode_worker_record(text);
    if (!record || record->fingerprint != m_fingerprint || record->draining) continue;
    if (record->running >= record->concurrency) continue;  // busy the whole interval
    idle.push_back(IdleWorker{id, record->host, record->site, record->provides});
  }
  const std::string ttl = std::to_string(2 * m_period.count());
  for (const auto& [worker, manager] : assign_idle_workers(demands, classes, idle))
    m_client.send(Role::commands, {"SET", m_keys.assignment(worker), manager, "PX", ttl}, ignore);
}

void Matcher::leave() {
  if (m_left.exchange(true)) return;
  m_client.send(Role::commands, {"HDEL", m_demand_key, m_manager}, ignore);
  m_client.eval(release_script(), {m_keys.matcher()}, {m_manager}, ignore);
}

}  // namespace scale::detail
