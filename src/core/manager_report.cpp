// A manager's report: see manager_report.hpp for why it looks like this.

#include "core/manager_report.hpp"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <stdexcept>
#include <utility>

#include <scale/detail/loop.hpp>
#include <scale/error.hpp>

#include "core/exception_message.hpp"
#include "core/host_name.hpp"
#include "remote/wire_error.hpp"

namespace scale {

namespace detail {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view events_name = "_scale/managers";
constexpr std::string_view snapshot_prefix = "_scale/managers/";
constexpr std::string_view orders_root = "_scale/orders/";
constexpr std::size_t max_name = 128;
constexpr std::size_t max_order_id = 64;

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool name_char(char c, bool dots) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         (dots && c == '.');
}

bool valid_order_id(const std::string& id) {
  return !id.empty() && id.size() <= max_order_id &&
         std::all_of(id.begin(), id.end(), [](char c) { return name_char(c, false); });
}

const char* state_name(std::optional<CallEnd> end) {
  if (!end) return "running";
  switch (*end) {
    case CallEnd::done:
      return "done";
    case CallEnd::failed:
      return "failed";
    case CallEnd::cancelled:
      return "cancelled";
  }
  return "failed";
}

/// The payload without what moves on its own (time_ms, seq, heartbeat ages): what "changed" compares.
nlohmann::json change_key(const nlohmann::json& payload) {
  nlohmann::json key = payload;
  key.erase("time_ms");
  key.erase("seq");
  for (auto& worker : key["workers"]) worker.erase("heartbeat_age_ms");
  return key;
}

nlohmann::json worker_json(const ReportedWorker& worker) {
  return nlohmann::json{{"id", worker.id},
                        {"host", worker.host},
                        {"site", worker.site},
                        {"pid", worker.pid},
                        {"concurrency", worker.concurrency},
                        {"heartbeat_age_ms", worker.heartbeat_age ? nlohmann::json(worker.heartbeat_age->count())
                                                                  : nlohmann::json(nullptr)},
                        {"draining", worker.draining}};
}

}  // namespace

void check_report_name(const std::string& name) {
  if (name.empty() || name.size() > max_name ||
      !std::all_of(name.begin(), name.end(), [](char c) { return name_char(c, true); }))
    throw std::invalid_argument("scale::ScalabilityManager::report_to: the name \"" + name.substr(0, 200) +
                                "\" is not allowed; use 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-' "
                                "(it names the key _scale/managers/<name>)");
}

/// The latch stop() waits on off the loop.
struct ManagerReport::Finish {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;

  void set() noexcept {
    {
      std::lock_guard lock(mutex);
      done = true;
    }
    cv.notify_all();
  }
  void wait_for(std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex);
    cv.wait_for(lock, limit, [&] { return done; });
  }
};

/// The coroutines of the report's writes; each ends in its own handler (nothing escapes).
struct WriteWatch {
  /// A snapshot write (`event` false) or an event: once answered, the next may go (and a finish
  /// waiting for it).
  template <class T>
  static Detached watch(std::shared_ptr<ManagerReport> self, Future<T> sent, bool event) {
    std::exception_ptr error;
    try {
      co_await resume_where_completed(std::move(sent));
    } catch (...) {
      error = std::current_exception();
    }
    self->failed(error);
    self->written(event);
  }
  /// The end: erase the key, then the last event. Holds `self` (and so the backends) until done.
  static Detached finish(std::shared_ptr<ManagerReport> self) {
    try {
      Future<bool> erased = self->m_memory.erase(self->m_key);
      co_await resume_where_completed(std::move(erased));
    } catch (...) {
      self->failed(std::current_exception());
    }
    if (self->m_events) {
      try {
        nlohmann::json ended = nlohmann::json::object();
        ended["name"] = self->m_name;
        ended["ended"] = true;
        ended["time_ms"] = unix_ms();
        Future<void> sent = self->m_events->emit(std::string(events_name), std::move(ended));
        co_await resume_where_completed(std::move(sent));
      } catch (...) {
        self->failed(std::current_exception());
      }
    }
    self->m_finish->set();
  }
};

/// An order's drain, awaited on the loop; then its key goes and the answer is emitted.
struct OrderRun {
  static Detached run(std::shared_ptr<ManagerReport> self, Future<void> drained, std::string key, std::string id,
                      std::string worker) {
    std::exception_ptr error;
    try {
      co_await std::move(drained);
    } catch (...) {
      error = std::current_exception();
    }
    if (error)
      self->refuse(key, id, error);
    else
      self->order_done(key, id, worker);
  }
  /// Erases an order's key; a failure is logged (the order stays, for a person to see).
  static Detached erase(std::shared_ptr<ManagerReport> self, std::string key) {
    try {
      Future<bool> erased = self->m_memory.erase(key);
      co_await resume_where_completed(std::move(erased));
    } catch (...) {
      self->failed(std::current_exception());
    }
  }
  static Detached emit(std::shared_ptr<ManagerReport> self, nlohmann::json payload) {
    try {
      Future<void> sent = self->m_events->emit(std::string(events_name), std::move(payload));
      co_await resume_where_completed(std::move(sent));
    } catch (...) {
      self->failed(std::current_exception());
    }
  }
};

ManagerReport::ManagerReport(ScalabilityManager& manager, SharedMemory memory, std::string name,
                             std::optional<SharedEventEmitter> events)
    : m_name(std::move(name)),
      m_key(std::string(snapshot_prefix) + m_name),
      m_order_prefix(std::string(orders_root) + m_name + "/"),
      m_memory(std::move(memory)),
      m_events(std::move(events)),
      m_host(host_name()),
      m_pid(static_cast<int>(::getpid())),
      m_manager(&manager),
      m_finish(std::make_shared<Finish>()) {}

void ManagerReport::start() {
  post([weak = weak_from_this()] {
    if (auto self = weak.lock()) self->begin();
  });
}

void ManagerReport::begin() {
  {
    std::lock_guard lock(m_mutex);
    if (m_manager == nullptr) return;
    for (const auto& call : m_manager->running_calls()) follow(call);
  }
  // Orders: changes from now on, and those already there (each handled once: m_orders_seen).
  Subscription orders = m_memory.watch(m_order_prefix, [weak = weak_from_this()](const Change& change) {
    auto self = weak.lock();
    if (!self) return;
    if (change.erased)
      self->m_orders_seen.erase(change.key);
    else
      self->order(change.key, change.value);
  });
  {
    std::lock_guard lock(m_mutex);
    if (m_manager == nullptr) return;  // stopped meanwhile: `orders` is cancelled on the way out
    m_orders = std::move(orders);
  }
  struct Listing {
    static Detached run(std::weak_ptr<ManagerReport> weak, Future<std::vector<Entry>> listed) {
      std::vector<Entry> entries;
      try {
        entries = co_await std::move(listed);
      } catch (const std::exception& e) {
        log_error(std::string("a manager's report could not list its orders: ") + e.what());
      }
      auto self = weak.lock();
      if (!self) co_return;
      for (const auto& entry : entries) self->order(entry.key, entry.value);
    }
  };
  Listing::run(weak_from_this(), m_memory.list(m_order_prefix));
  tick();
}

void ManagerReport::follow(const std::shared_ptr<CallDemand>& call) {
  if (call->m_record) return;
  auto record = std::make_shared<CallRecord>();
  record->id = ++m_next_call;
  record->call = call;
  try {
    record->last = call->progress_now();
  } catch (...) {
    // stats() threw: the next tick tries again
  }
  record->started_ms = unix_ms() - record->last.elapsed.count();
  call->m_record = record;
  m_records.push_back(std::move(record));
}

void ManagerReport::schedule() {
  post_at(Clock::now() + event_interval, [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->tick();
  });
}

void ManagerReport::tick() {
  std::optional<Publication> publication;
  try {
    publication = prepare();
  } catch (const std::exception& e) {
    // A manager's stats() or workers threw: this beat is skipped, the next one tries again.
    std::lock_guard lock(m_mutex);
    if (!m_error_logged) log_error(std::string("a manager's report could not be built: ") + e.what());
    m_error_logged = true;
  }
  {
    std::lock_guard lock(m_mutex);
    if (m_manager == nullptr) return;  // stopped: no more beats
  }
  if (publication) publish(std::move(*publication));
  schedule();
}

nlohmann::json ManagerReport::calls_locked(std::vector<std::shared_ptr<CallRecord>>& shown_ends) {
  nlohmann::json calls = nlohmann::json::array();
  for (const auto& record : m_records) {
    if (!record->end) {
      if (auto call = record->call.lock()) {
        Progress now = call->progress_now();
        now.fraction = std::max(now.fraction, record->last.fraction);
        record->last = now;
      } else {
        record->end = CallEnd::failed;  // gone without saying how it ended (the Runtime went)
      }
    }
    if (record->end) shown_ends.push_back(record);
    nlohmann::json call = nlohmann::json::object();
    call["id"] = record->id;
    call["started_ms"] = record->started_ms;
    call["state"] = state_name(record->end);
    call["progress"] = record->last;
    calls.push_back(std::move(call));
  }
  return calls;
}

std::optional<ManagerReport::Publication> ManagerReport::prepare() {
  std::lock_guard lock(m_mutex);
  if (m_manager == nullptr) return std::nullopt;
  std::vector<std::shared_ptr<CallRecord>> shown_ends;
  nlohmann::json payload = nlohmann::json::object();
  payload["name"] = m_name;
  payload["kind"] = std::string(m_manager->report_kind());
  payload["host"] = m_host;
  payload["pid"] = m_pid;
  payload["stats"] = m_manager->stats();
  nlohmann::json workers = nlohmann::json::array();
  for (auto& worker : m_manager->report_workers()) {
    if (worker.host.empty()) worker.host = m_host;
    if (worker.pid == 0) worker.pid = m_pid;
    workers.push_back(worker_json(worker));
  }
  payload["workers"] = std::move(workers);
  payload["calls"] = calls_locked(shown_ends);
  payload["orders"] = m_manager->obeys_orders();

  const auto now = Clock::now();
  const nlohmann::json key = change_key(payload);
  Publication publication;
  if (m_events && !m_event_in_flight) {
    const auto since = now - m_last_event;
    publication.emit = !m_emitted || (since >= event_interval && (key != m_last_event_key || since >= liveness_interval));
  }
  if (!m_write_in_flight)
    publication.write = !m_written || (key != m_last_snapshot_key && now - m_last_snapshot >= snapshot_interval);
  if (!publication.emit && !publication.write) return std::nullopt;

  payload["time_ms"] = unix_ms();
  payload["seq"] = ++m_seq;
  if (publication.emit) {
    m_emitted = true;
    m_event_in_flight = true;
    m_last_event = now;
    m_last_event_key = key;
  }
  if (publication.write) {
    m_written = true;
    m_write_in_flight = true;
    m_last_snapshot = now;
    m_last_snapshot_key = key;
  }
  // An ended call is shown once more in its final state, by the event (or by the snapshot when
  // there are no events): then it leaves the report.
  if (publication.emit || !m_events)
    std::erase_if(m_records, [&](const auto& record) {
      return std::find(shown_ends.begin(), shown_ends.end(), record) != shown_ends.end();
    });
  publication.payload = std::move(payload);
  return publication;
}

void ManagerReport::publish(Publication publication) {
  auto self = shared_from_this();
  if (publication.write) {
    Future<Revision> write;
    try {
      write = m_memory.set(m_key, publication.payload);
    } catch (...) {
      write = make_failed_future<Revision>(std::current_exception());
    }
    WriteWatch::watch(self, std::move(write), false);
  }
  if (publication.emit) {
    Future<void> sent;
    try {
      sent = m_events->emit(std::string(events_name), std::move(publication.payload));
    } catch (...) {
      sent = make_failed_future<void>(std::current_exception());
    }
    WriteWatch::watch(self, std::move(sent), true);
  }
}

void ManagerReport::failed(const std::exception_ptr& error) noexcept {
  if (!error) return;
  std::lock_guard lock(m_mutex);
  if (m_error_logged) return;
  m_error_logged = true;
  log_error("a manager's report to the store failed (the next beats try again; this is logged once): " +
            exception_message(error));
}

void ManagerReport::written(bool event) noexcept {
  bool finish_now = false;
  {
    std::lock_guard lock(m_mutex);
    (event ? m_event_in_flight : m_write_in_flight) = false;
    if (m_finishing && !m_finish_started && !m_event_in_flight && !m_write_in_flight) {
      m_finish_started = true;
      finish_now = true;
    }
  }
  if (finish_now) finish();
}

void ManagerReport::finish() noexcept { WriteWatch::finish(shared_from_this()); }

void ManagerReport::stop() noexcept {
  bool finish_now = false;
  Subscription orders;
  {
    std::lock_guard lock(m_mutex);
    if (m_manager == nullptr) return;
    m_manager = nullptr;
    orders = std::move(m_orders);
    m_finishing = true;
    if (!m_event_in_flight && !m_write_in_flight) {
      m_finish_started = true;
      finish_now = true;
    }
  }
  // NOTE: cancelled with m_mutex released: off the loop, cancel() waits for a handler the loop
  // may be running, and that handler takes m_mutex (to find no manager now).
  auto finished = m_finish;
  orders.cancel();
  if (finish_now) finish();
  if (!on_loop_thread()) finished->wait_for(final_wait);
}

void ManagerReport::order(const std::string& key, const nlohmann::json& value) {
  if (!m_orders_seen.insert(key).second) return;
  const std::string id = key.substr(m_order_prefix.size());
  if (!valid_order_id(id))
    return refuse(key, id,
                  std::make_exception_ptr(Error("scale: the drain order " + key +
                                                " has an order id that is not allowed; use 1 to 64 characters of "
                                                "A-Z, a-z, 0-9, '_' and '-' after " + m_order_prefix)));
  nlohmann::json order = value;
  if (order.is_string()) {
    try {
      order = nlohmann::json::parse(order.get<std::string>());
    } catch (const nlohmann::json::exception&) {
      // refused below: not an object
    }
  }
  if (!order.is_object() || !order.contains("drain") || !order["drain"].is_string() ||
      order["drain"].get<std::string>().empty())
    return refuse(key, id,
                  std::make_exception_ptr(Error("scale: the order " + key + " is not a drain order; write " +
                                                "{\"drain\": \"<worker id>\"} (a JSON object naming a worker of "
                                                "the manager's workers list)")));
  const std::string worker = order["drain"].get<std::string>();
  Future<void> drained;
  {
    std::lock_guard lock(m_mutex);
    if (m_manager == nullptr) return;  // going: its key is left for a manager of that name
    try {
      drained = m_manager->drain_for_order(worker);  // a manager with nothing to drain fails it
    } catch (...) {
      drained = make_failed_future<void>(std::current_exception());
    }
  }
  OrderRun::run(shared_from_this(), std::move(drained), key, id, worker);
}

void ManagerReport::refuse(const std::string& key, const std::string& order_id, std::exception_ptr error) {
  auto self = shared_from_this();
  OrderRun::erase(self, key);
  if (!m_events) return;
  const nlohmann::json wire = error_to_json(error);
  nlohmann::json answer = nlohmann::json::object();
  answer["name"] = m_name;
  answer["order"] = order_id;
  answer["error"] = wire.value("error", exception_message(error));
  answer["type"] = wire.value("type", "Error");
  OrderRun::emit(self, std::move(answer));
}

void ManagerReport::order_done(const std::string& key, const std::string& order_id, const std::string& worker) {
  auto self = shared_from_this();
  OrderRun::erase(self, key);
  if (!m_events) return;
  nlohmann::json answer = nlohmann::json::object();
  answer["name"] = m_name;
  answer["order"] = order_id;
  answer["drain"] = worker;
  answer["done"] = true;
  OrderRun::emit(self, std::move(answer));
}

void report_call(ManagerReport& report, const std::shared_ptr<CallDemand>& call) { report.follow(call); }

void CallDemand::report_end(CallEnd end, const Progress& last) noexcept {
  if (!m_record || m_record->end) return;
  const double shown = m_record->last.fraction;  // a failed call's bar stays where it was
  m_record->end = end;
  m_record->last = last;
  m_record->last.fraction = std::max(last.fraction, shown);
}

}  // namespace detail

void ScalabilityManager::report_to(SharedMemory& memory, std::string name, SharedEventEmitter* events) {
  detail::check_report_name(name);
  if (!detail::loop_running())
    throw std::logic_error("scale::ScalabilityManager::report_to: no scale::Runtime is running; the report runs on "
                           "its loop, so construct the Runtime first");
  std::optional<SharedEventEmitter> emitter;
  if (events != nullptr)
    emitter = *events;
  else if (memory.url().starts_with("http://") || memory.url().starts_with("redis://"))
    emitter = SharedEventEmitter(memory.url());
  auto report = std::make_shared<detail::ManagerReport>(*this, memory, std::move(name), std::move(emitter));
  {
    std::lock_guard lock(m_calls_mutex);
    if (m_report)
      throw std::logic_error("scale::ScalabilityManager::report_to: this manager already reports; a manager reports "
                             "to one store under one name");
    m_report = report;
  }
  report->start();
}

void ScalabilityManager::stop_reporting() noexcept {
  std::shared_ptr<detail::ManagerReport> report;
  {
    std::lock_guard lock(m_calls_mutex);
    report = std::move(m_report);
    m_report = nullptr;
  }
  if (report) report->stop();
}

Future<void> ScalabilityManager::drain_for_order(std::string worker_id) {
  return make_failed_future<void>(std::make_exception_ptr(
      Error("scale: cannot drain '" + worker_id + "': this is a " + std::string(report_kind()) +
            " manager, with no workers to drain; only a ClusterManager obeys drain orders (resize a pool with "
            "resize() or adapt() in the program instead)")));
}

}  // namespace scale
