// A cluster worker's own task stream (cluster/worker_stream.hpp).

#include "cluster/worker_stream.hpp"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "cluster/redis_wait.hpp"

namespace scale::detail {

namespace {

using Role = RedisClient::Role;

void ignore(std::exception_ptr, RedisReply) {}

}  // namespace

std::string encode_amounts(const HeldAmounts::Amounts& amounts) {
  std::string out;
  for (const auto& [name, amount] : amounts) {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", amount);
    if (!out.empty()) out += ';';
    out += name + "=" + text;
  }
  return out;
}

HeldAmounts::Amounts decode_amounts(const std::string& text) {
  HeldAmounts::Amounts out;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find(';', at);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(at, end - at);
    const std::size_t equals = item.find('=');
    if (equals != std::string::npos && equals > 0) {
      char* parsed = nullptr;
      const double amount = std::strtod(item.c_str() + equals + 1, &parsed);
      if (parsed != item.c_str() + equals + 1) out[item.substr(0, equals)] = amount;
    }
    at = end + 1;
  }
  return out;
}

WorkerStream::WorkerStream(RedisClient& client, const ClusterKeys& keys, const std::string& worker, int ttl_ms)
    : m_client(client),
      m_key(keys.worker_tasks(worker)),
      m_consumer(worker),
      // NOTE: a few heartbeat TTLs: the worker is taken for lost well before its stream goes.
      m_ttl(std::to_string(4 * ttl_ms)) {}

void WorkerStream::create() {
  // BUSYGROUP (made already) is fine.
  wait_for_reply(m_client, Role::commands, {"XGROUP", "CREATE", m_key, cluster_group, "0", "MKSTREAM"});
  wait_for_reply(m_client, Role::commands, {"PEXPIRE", m_key, m_ttl});
}

void WorkerStream::renew(std::function<void(bool)> present) {
  m_client.send(Role::commands, {"PEXPIRE", m_key, m_ttl},
                [this, present = std::move(present)](std::exception_ptr error, RedisReply reply) {
                  if (error || reply.type != RedisReply::Type::integer) return;
                  if (reply.integer == 1) {
                    present(true);
                    return;
                  }
                  // Gone (Redis lost its data, or this worker was silent past its TTL): made again.
                  m_client.send(Role::commands, {"XGROUP", "CREATE", m_key, cluster_group, "0", "MKSTREAM"}, ignore);
                  m_client.send(Role::commands, {"PEXPIRE", m_key, m_ttl},
                                [present](std::exception_ptr, RedisReply) { present(true); });
                });
  m_client.send(Role::commands, {"XLEN", m_key}, [this](std::exception_ptr error, RedisReply reply) {
    if (!error && reply.type == RedisReply::Type::integer && reply.integer > 0) saw_entries();
  });
}

void WorkerStream::remove() { m_client.send(Role::commands, {"DEL", m_key}, ignore); }

std::vector<ReadChunk> WorkerStream::read(std::size_t room) {
  RedisReply reply = wait_for_reply(m_client, Role::commands,
                                    {"XREADGROUP", "GROUP", cluster_group, m_consumer, "COUNT", std::to_string(room),
                                     "STREAMS", m_key, ">"});
  std::vector<ReadChunk> chunks;
  if (reply.type == RedisReply::Type::array)
    for (RedisReply& stream : reply.elements) {
      if (stream.elements.size() != 2) continue;
      for (RedisReply& entry : stream.elements[1].elements) {
        if (entry.elements.size() != 2) continue;
        chunks.push_back(ReadChunk{m_key, std::move(entry.elements[0].str), std::move(entry.elements[1]), {}});
      }
    }
  if (chunks.empty()) m_active.store(false, std::memory_order_relaxed);
  return chunks;
}

}  // namespace scale::detail
