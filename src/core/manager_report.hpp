#pragma once
// A manager's report (ScalabilityManager::report_to): its kind, stats, workers and running calls,
// published to a SharedMemory and a SharedEventEmitter for the dashboard, and the drain orders it
// obeys. The payload and its cadence: docs/dashboard.md, "Managers that report".
//
// Why it looks like this:
//   - One thread reports: the loop. A timer (post_at, every 250 ms, as the dispatch's progress
//     timer) builds the payload there. A call's progress is the dispatch's own state, which lives
//     on the loop (CallDemand::progress_now), so reading it there needs no lock or atomic per
//     chunk; the manager's stats() and report_workers() are what every manager already offers to
//     any thread (counters, and its own lock for its workers).
//   - The manager goes first: a derived manager's members are gone before the base destructor
//     runs, so each manager calls stop_reporting() at the start of its own destructor. stop()
//     takes m_mutex (the tick holds it while it reads the manager) and forgets the manager: once
//     it returns nothing here touches it again. Then the snapshot key is erased and the "ended"
//     event emitted, after the writes still in flight (so the erase cannot be overtaken by an
//     older snapshot). Off the loop, stop() waits for that up to 2 s (an unreachable store must
//     not hold up the program); on the loop it cannot wait (the answers may need the loop), so it
//     only starts it: the coroutine that finishes the job holds this object, and with it the
//     memory and emitter handles, so their backends live until it is done.
//   - At most one event and one snapshot write in flight: a slow store makes the report skip
//     beats rather than queue them without bound.
//   - Calls: the report keeps a CallRecord per call (the dispatch keeps it too, so the end it
//     writes reaches the report even after the dispatch is gone), shows a running call's
//     progress_now(), and a call that ended once more with its final state; then drops it. A call
//     of a manager that does not report has no record: the dispatch checks one pointer when it ends.
//   - "Something changed" compares the payload without time_ms, seq and heartbeat ages (those move
//     all the time): an idle manager emits its liveness beat only, a busy one every 250 ms.
//   - Orders: a watch on _scale/orders/<name>/ (plus one list at start, for orders written before
//     the manager reported), each order handled once, its key erased when it is done or refused.
//     The drain is asked of the manager under m_mutex (so never of a manager being destroyed);
//     its answer is awaited without it, and only the report (not the manager) is touched then.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <scale/progress.hpp>
#include <scale/scalability_manager.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>
#include <scale/subscription.hpp>

namespace scale::detail {

/// What the report knows of one call. Loop thread only.
class CallRecord {
 public:
  std::uint64_t id = 0;
  std::int64_t started_ms = 0;      ///< unix ms
  std::weak_ptr<CallDemand> call;   ///< the dispatch while it lives
  std::optional<CallEnd> end;       ///< set by CallDemand::report_end
  Progress last;                    ///< the last progress shown (or the final one, with end)
};

/// Throws std::invalid_argument unless `name` is 1-128 characters of [A-Za-z0-9._-].
void check_report_name(const std::string& name);

class ManagerReport : public std::enable_shared_from_this<ManagerReport> {
 public:
  /// `events`: where the events go; none: snapshots only.
  ManagerReport(ScalabilityManager& manager, SharedMemory memory, std::string name,
                std::optional<SharedEventEmitter> events);

  /// Any thread: the first report and the orders' watch start on the loop.
  void start();
  /// On the loop: follows a call that started (or was running when the report started).
  void follow(const std::shared_ptr<CallDemand>& call);
  /// Any thread, once: forgets the manager, then erases the key and emits "ended" (see above).
  void stop() noexcept;

  static constexpr auto event_interval = std::chrono::milliseconds(250);
  static constexpr auto liveness_interval = std::chrono::milliseconds(1500);  // < 2 s with a late tick
  static constexpr auto snapshot_interval = std::chrono::milliseconds(2000);
  static constexpr auto final_wait = std::chrono::milliseconds(2000);

 private:
  /// What one tick publishes, decided under m_mutex and sent after it.
  struct Publication {
    nlohmann::json payload;
    bool emit = false;
    bool write = false;
  };
  struct Finish;

  void begin();
  void tick();
  void schedule();
  std::optional<Publication> prepare();
  nlohmann::json calls_locked(std::vector<std::shared_ptr<CallRecord>>& shown_ends);
  void publish(Publication publication);
  void written(bool event) noexcept;
  /// Logs a failed write or emit, once per report (a store that is down would flood the log).
  void failed(const std::exception_ptr& error) noexcept;
  void finish() noexcept;
  void order(const std::string& key, const nlohmann::json& value);
  void refuse(const std::string& key, const std::string& order_id, std::exception_ptr error);
  void order_done(const std::string& key, const std::string& order_id, const std::string& worker);

  friend struct OrderRun;
  friend struct WriteWatch;

  const std::string m_name;
  const std::string m_key;           // _scale/managers/<name>
  const std::string m_order_prefix;  // _scale/orders/<name>/
  SharedMemory m_memory;
  std::optional<SharedEventEmitter> m_events;
  const std::string m_host;
  const int m_pid;

  // Loop thread only.
  std::vector<std::shared_ptr<CallRecord>> m_records;
  std::uint64_t m_next_call = 0;
  std::set<std::string> m_orders_seen;

  std::mutex m_mutex;
  ScalabilityManager* m_manager;  // null once stop() began; read only under m_mutex
  Subscription m_orders;          // the orders' watch; under m_mutex (stop() cancels it)
  std::uint64_t m_seq = 0;
  nlohmann::json m_last_event_key;
  nlohmann::json m_last_snapshot_key;
  std::chrono::steady_clock::time_point m_last_event{};
  std::chrono::steady_clock::time_point m_last_snapshot{};
  bool m_emitted = false;
  bool m_written = false;
  bool m_event_in_flight = false;
  bool m_write_in_flight = false;
  bool m_finishing = false;
  bool m_finish_started = false;
  bool m_error_logged = false;
  std::shared_ptr<Finish> m_finish;  // the latch stop() waits on off the loop
};

}  // namespace scale::detail
