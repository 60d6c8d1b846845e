#include "cluster/demand.hpp"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <limits>
#include <utility>
#include <vector>

#include <scale/detail/loop.hpp>

namespace scale::detail {

namespace {

using Role = RedisClient::Role;

void ignore(std::exception_ptr, RedisReply) {}

int milliseconds_of(std::chrono::steady_clock::duration duration) {
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(duration).count();
  return static_cast<int>(std::clamp<std::int64_t>(ms, 1, std::numeric_limits<int>::max()));
}

}  // namespace

// A cluster has no cap of its own: whatever starts workers knows how many machines it has.
ClusterDemand::ClusterDemand(ScalingPolicy policy, std::function<void(std::size_t)> on_demand,
                             std::function<std::size_t()> backlog)
    : m_on_demand(std::move(on_demand)),
      m_backlog(std::move(backlog)),
      m_controller(policy, std::numeric_limits<std::size_t>::max()),
      m_target(m_controller.policy().min),
      m_desired(m_target) {}

void ClusterDemand::start(RedisClient& client, const ClusterKeys& keys, const std::string& fingerprint,
                          const std::string& manager_id, std::chrono::milliseconds every) {
  std::lock_guard lock(m_mutex);
  m_client = &client;
  m_keys = keys;
  m_key = keys.desired(fingerprint);
  m_id = manager_id;
  m_refresh = every;
  send_locked(Clock::now());
  m_client->post(
      [weak = weak_from_this()] {
        if (auto self = weak.lock()) self->refresh();
      },
      milliseconds_of(m_refresh));
}

void ClusterDemand::backlog_changed() {
  // NOTE: posted even from the loop. A call attaches before it cuts its first chunk, and its
  // backlog in chunks is right only once it has (evaluated at once, the count would jump to what
  // single-item chunks ask for and stay there a whole scale_down_after). A burst of changes (results
  // arriving together) is evaluated once; the flag is cleared before the backlog is read, so a
  // change during an evaluation posts another.
  if (m_evaluation_posted.exchange(true, std::memory_order_acq_rel)) return;
  post([weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->m_evaluation_posted.store(false, std::memory_order_release);
      self->evaluate();
    }
  });
}

void ClusterDemand::evaluate() {
  std::unique_lock lock(m_mutex);
  if (m_stopped) return;
  const auto now = Clock::now();
  const std::size_t backlog = m_backlog();
  const std::size_t target = m_controller.step(now, m_target, backlog);
  schedule_deadline_locked();
  if (target == m_target) return;
  m_target = target;
  m_desired.store(target, std::memory_order_relaxed);
  write_locked(now);
  if (!m_on_demand) return;
  ++m_in_callback;
  lock.unlock();
  report(target);
}

void ClusterDemand::schedule_deadline_locked() {
  const auto deadline = m_controller.next_deadline();
  if (!deadline || (m_deadline_due && *m_deadline_due <= *deadline)) return;
  m_deadline_due = *deadline;
  const bool posted = post_at(*deadline, [weak = weak_from_this(), at = *deadline] {
    if (auto self = weak.lock()) self->deadline_passed(at);
  });
  if (!posted) m_deadline_due.reset();  // no running loop: no call runs either
}

void ClusterDemand::deadline_passed(Clock::time_point at) {
  {
    std::lock_guard lock(m_mutex);
    if (m_deadline_due == at) m_deadline_due.reset();
  }
  evaluate();
}

void ClusterDemand::report(std::size_t count) {
  try {
    m_on_demand(count);
  } catch (const std::exception& error) {
    log_error(std::string("ClusterOptions::on_demand threw: ") + error.what());
  } catch (...) {
    log_error("ClusterOptions::on_demand threw an exception that is not a std::exception");
  }
  std::lock_guard lock(m_mutex);
  if (--m_in_callback == 0) m_idle.notify_all();
}

void ClusterDemand::write_locked(Clock::time_point now) {
  if (!m_client || m_written == m_target) return;
  const auto since = now - m_last_write;
  if (!m_written || since >= write_interval) return send_locked(now);
  if (m_flush_pending) return;
  m_flush_pending = true;
  m_client->post(
      [weak = weak_from_this()] {
        if (auto self = weak.lock()) self->flush();
      },
      milliseconds_of(write_interval - since));
}

void ClusterDemand::flush() {
  std::lock_guard lock(m_mutex);
  m_flush_pending = false;
  if (m_stopped || m_written == m_target) return;
  send_locked(Clock::now());
}

void ClusterDemand::send_locked(Clock::time_point now) {
  // NOTE: sent under m_mutex, as stop()'s HDEL is, so no write can reach Redis after the HDEL.
  m_client->send(Role::commands, {"HSET", m_key, m_id, std::to_string(m_target)}, ignore);
  m_client->send(Role::commands, {"PEXPIRE", m_key, std::to_string(hash_ttl.count())}, ignore);
  m_written = m_target;
  m_last_write = now;
}

void ClusterDemand::refresh() {
  std::lock_guard lock(m_mutex);
  if (m_stopped) return;
  send_locked(Clock::now());
  m_client->send(Role::commands, {"HKEYS", m_key},
                 [weak = weak_from_this()](std::exception_ptr error, RedisReply reply) {
                   auto self = weak.lock();
                   if (self && !error && !reply.is_error()) self->forget_gone_managers(reply);
                 });
  m_client->post(
      [weak = weak_from_this()] {
        if (auto self = weak.lock()) self->refresh();
      },
      milliseconds_of(m_refresh));
}

void ClusterDemand::forget_gone_managers(const RedisReply& fields) {
  std::lock_guard lock(m_mutex);
  if (m_stopped) return;
  for (const RedisReply& field : fields.elements) {
    if (field.str == m_id) continue;
    m_client->send(Role::commands, {"EXISTS", m_keys.results(field.str)},
                   [weak = weak_from_this(), manager = field.str](std::exception_ptr error, RedisReply reply) {
                     if (error || reply.type != RedisReply::Type::integer || reply.integer != 0) return;
                     auto self = weak.lock();
                     if (!self) return;
                     std::lock_guard inner(self->m_mutex);
                     if (!self->m_stopped) self->m_client->send(Role::commands, {"HDEL", self->m_key, manager}, ignore);
                   });
  }
}

void ClusterDemand::stop() {
  std::unique_lock lock(m_mutex);
  if (m_stopped) return;
  m_stopped = true;
  if (m_client) m_client->send(Role::commands, {"HDEL", m_key, m_id}, ignore);
  // NOTE: on_demand runs on the loop only; on the loop it is not running now, unless this is
  // called from within it (the manager destroyed by its own callback), where waiting would hang.
  if (!on_loop_thread()) m_idle.wait(lock, [this] { return m_in_callback == 0; });
}

}  // namespace scale::detail
