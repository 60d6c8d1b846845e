#pragma once
// ClusterDemand: how many workers a ClusterManager's backlog wants (desired_workers()), told to
// the program through ClusterOptions::on_demand and to whatever starts workers through Redis
// (docs/cluster.md, "Asking for workers").
//
// Why it looks like this:
//   - The rule is ScalingController's, the one the pools' adapt() follows; this class feeds it the
//     manager's backlog on the loop, whenever a call cuts or finishes chunks (backlog_changed) and
//     when one of the controller's windows ends (next_deadline), since nothing else may happen then.
//   - The count lives in field <manager id> of the hash <tag>:desired:<fingerprint>, so that the
//     managers of one build add up to what the build wants. Redis hears of a change at most once
//     per write_interval (the latest count, so the last change is never lost), never per chunk.
//   - A manager killed with kill -9 cannot remove its field, so the field is written again every
//     refresh interval and the hash expires hash_ttl after the last write; at each refresh a live
//     manager also removes the fields of managers whose result stream has expired
//     (<tag>:results:<id>, which a live manager renews at every scan). A dead manager stops asking
//     within about a minute.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cluster/keys.hpp"
#include "core/scaling_controller.hpp"
#include "redis/redis_client.hpp"
#include <scale/scaling_policy.hpp>

namespace scale::detail {

class ClusterDemand : public std::enable_shared_from_this<ClusterDemand> {
 public:
  using Clock = std::chrono::steady_clock;

  /// The least time between two writes of a changed count.
  static constexpr std::chrono::milliseconds write_interval{250};
  /// How often the field is written again although it did not change (and dead managers'
  /// fields removed): ten heartbeat intervals, within [1 s, 10 s] (10 s by default).
  static std::chrono::milliseconds refresh_interval(std::chrono::milliseconds heartbeat_interval) noexcept {
    return std::clamp<std::chrono::milliseconds>(10 * heartbeat_interval, std::chrono::seconds(1),
                                                 std::chrono::seconds(10));
  }
  /// The hash's TTL, renewed with each write.
  static constexpr std::chrono::milliseconds hash_ttl{60'000};

  /// Checks `policy` (std::invalid_argument naming the field); policy.max 0 means no cap.
  /// `backlog` is the manager's ScalabilityManager::backlog(); `on_demand` may be empty.
  ClusterDemand(ScalingPolicy policy, std::function<void(std::size_t)> on_demand, std::function<std::size_t()> backlog);

  ClusterDemand(const ClusterDemand&) = delete;
  ClusterDemand& operator=(const ClusterDemand&) = delete;

  /// Writes the first count (policy.min) under `manager_id`, and again `every` so long.
  /// `client` must stay whole until stop() has returned.
  void start(RedisClient& client, const ClusterKeys& keys, const std::string& fingerprint,
             const std::string& manager_id, std::chrono::milliseconds every);

  /// The manager's backlog changed: evaluated soon on the loop. Returns at once; any thread.
  void backlog_changed();

  /// The count as of the last evaluation. Any thread.
  std::size_t desired() const noexcept { return m_desired.load(std::memory_order_relaxed); }

  /// Removes the field, and returns once no on_demand call runs nor will run (unless called from
  /// on_demand itself). Call it while the client still runs. Idempotent.
  void stop();

 private:
  void evaluate();
  void deadline_passed(Clock::time_point at);
  void report(std::size_t count);  // calls on_demand; m_in_callback counts it
  void flush();
  void refresh();
  void write_locked(Clock::time_point now);
  void send_locked(Clock::time_point now);
  void schedule_deadline_locked();
  void forget_gone_managers(const RedisReply& fields);

  std::function<void(std::size_t)> m_on_demand;
  std::function<std::size_t()> m_backlog;

  mutable std::mutex m_mutex;
  std::condition_variable m_idle;  // m_in_callback fell to 0
  ScalingController m_controller;
  std::size_t m_target;                             // the count, as the controller left it
  std::atomic<std::size_t> m_desired;               // m_target, for readers on any thread
  std::atomic<bool> m_evaluation_posted{false};     // an evaluation waits on the loop
  std::optional<std::size_t> m_written;             // what Redis was last sent
  Clock::time_point m_last_write{};                 // when
  bool m_flush_pending = false;                     // a write of a later change is scheduled
  std::optional<Clock::time_point> m_deadline_due;  // the earliest deadline a loop timer waits for
  bool m_stopped = false;
  int m_in_callback = 0;

  // Set by start().
  RedisClient* m_client = nullptr;
  ClusterKeys m_keys;
  std::string m_key;  // <tag>:desired:<fingerprint>
  std::string m_id;   // this manager's field
  std::chrono::milliseconds m_refresh{0};
};

}  // namespace scale::detail
