// The worker side of the cluster: a process started with `--scale-worker redis://...` reads the
// task streams of its build whose requirement class its provides meet (cluster/chunk_reader.hpp),
// keeps its heartbeat key alive, announces itself to the managers of its build (an entry on each
// one's results stream, which wakes it at once), runs up to its concurrency of chunks at once
// (cluster/chunk_runner.hpp) within the amounts it provides (cluster/held_amounts.hpp), sends each
// result to the stream of the manager that queued it, and obeys the orders of any manager of its
// build: drain, threads, provides, and the stop and abandon of chunks it holds
// (cluster/running_chunk.hpp), whose progress it sends in batches. Its heartbeat also says its
// round trip to Redis and whether it was idle, and reads the manager it is assigned to serve first
// (cluster/matcher.hpp). While chunks are short it reads ahead (core/short_chunks.hpp), and the
// task entries of results answered together are acknowledged together. See src/cluster/keys.hpp
// for the keys.

#include "core/host_name.hpp"
#include "cluster/worker.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <list>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <scale/detail/loop.hpp>
#include <scale/detail/wire.hpp>

#include "cluster/chunk_reader.hpp"
#include "cluster/chunk_runner.hpp"
#include "cluster/held_amounts.hpp"
#include "cluster/keys.hpp"
#include "cluster/redis_wait.hpp"
#include "cluster/result_delivery.hpp"
#include "cluster/round_trip_time.hpp"
#include "cluster/running_chunk.hpp"
#include "core/short_chunks.hpp"
#include "cluster/worker_order.hpp"
#include "cluster/worker_record.hpp"
#include "cluster/worker_setups.hpp"
#include "cluster/worker_stream.hpp"
#include "process/program_arguments.hpp"
#include "remote/build_fingerprint.hpp"
#include "remote/wire_error.hpp"

namespace scale::detail {

namespace {

using Role = RedisClient::Role;

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) { g_stop.store(true); }

/// The fields of a stream entry ([id, [name, value, ...]]) by name.
std::string field(const RedisReply& fields, std::string_view name) {
  for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2)
    if (fields.elements[i].str == name) return fields.elements[i + 1].str;
  return {};
}

/// The program's arguments without the cluster worker's flags: what the children of a
/// --scale-processes worker start with (with --scale-worker they would join the cluster themselves).
std::vector<std::string> without_worker_flags(const std::vector<std::string>& arguments) {
  const std::string flags[] = {cluster_worker_flag,   heartbeat_flag,       worker_threads_flag,
                               worker_processes_flag, worker_provides_flag, worker_site_flag};
  std::vector<std::string> kept;
  for (std::size_t i = 0; i < arguments.size(); ++i) {
    bool ours = false;
    for (const std::string& flag : flags) {
      if (arguments[i] == flag) {
        ours = true;
        if (i + 1 < arguments.size() && !arguments[i + 1].starts_with("--scale-")) ++i;  // its value
      } else if (arguments[i].starts_with(flag + "=")) {
        ours = true;
      }
      if (ours) break;
    }
    if (!ours) kept.push_back(arguments[i]);
  }
  return kept;
}

char kind_letter(ChunkOutcome::Kind kind) {
  switch (kind) {
    case ChunkOutcome::Kind::results:
      return 'r';
    case ChunkOutcome::Kind::lost:
      return 'l';
    case ChunkOutcome::Kind::error:
    case ChunkOutcome::Kind::skipped:  // never delivered: given back
      break;
  }
  return 'e';
}

std::string encoded_error(const std::string& message) {
  std::string out;
  encode_exception(std::make_exception_ptr(Error(message)), out);
  return out;
}

/// The task entry's "g": its call's grace in milliseconds (the default when absent or bad).
std::chrono::milliseconds grace_of(const std::string& text) {
  if (text.empty()) return std::chrono::milliseconds(2000);
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || value < 0) return std::chrono::milliseconds(2000);
  return std::chrono::milliseconds(value);
}

/// How often a running chunk's progress goes to its manager, at most.
constexpr int progress_batch_ms = 50;

/// What an order's provides become on a worker with a site: its site=<site> label stays unless the
/// order names a site itself.
Provides with_site(Provides provides, const std::string& site) {
  if (!site.empty()) provides.emplace("site", site);
  return provides;
}

/// A chunk this worker holds: its control, and where its progress goes.
struct HeldChunk {
  std::shared_ptr<RunningChunk> control;
  std::string results_stream;
  std::string attempt;
};

class ClusterWorkerProcess {
 public:
  explicit ClusterWorkerProcess(const ClusterWorkerOptions& options)
      : m_options(options),
        m_client(parse_redis_url(options.url)),
        m_keys(cluster_keys(m_client.url(), "--scale-worker")),
        m_id(cluster_member_id()),
        m_fingerprint(build_fingerprint()),
        m_reader(m_client, m_keys, m_fingerprint, m_id),
        m_interval_ms(std::max(10, options.heartbeat_ms)),
        m_ttl_ms(3 * m_interval_ms),
        m_own(m_client, m_keys, m_id, m_ttl_ms),
        m_setups(
            m_client, m_keys, m_id, [this](const std::string& manager) { m_reader.refuse_manager(manager); },
            [this](const std::string& payload) { m_runner->add_setup(payload); }),
        m_provides(options.provides) {
    m_amounts.set_provides(m_provides);
    m_reader.set_provides(m_provides);
  }

  [[noreturn]] void serve() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGTERM, &action, nullptr);
    ::sigaction(SIGINT, &action, nullptr);

    log_error("worker " + m_id + " serving " + m_client.url().text +
              (m_keys.tag == "{scale}" ? std::string() : " under " + m_keys.tag) + " (build fingerprint " +
              m_fingerprint + "; " + std::to_string(m_options.concurrency) + " chunk(s) at once on " +
              (m_options.processes ? "child processes" : "threads") +
              (m_provides.empty() ? std::string() : "; provides " + provides_text(m_provides)) +
              (m_options.site.empty() ? std::string() : "; site " + m_options.site) + ")");
    if (m_options.processes) set_program_arguments(without_worker_flags(program_arguments()));
    m_runner = std::make_unique<ChunkRunner>(m_options.concurrency, m_options.processes);
    try {
      m_own.create();  // before the first heartbeat: a manager that sees this worker finds its stream
      m_reader.watched_present(true);
    } catch (const ConnectionError&) {
      // The heartbeat makes it once Redis answers.
    }
    m_reader.watch(m_own.key());
    m_client.post([this] { heartbeat(); });
    try {
      m_bulk_limit = bulk_limit_of(call(Role::commands, {"CONFIG", "GET", "proto-max-bulk-len"}));
    } catch (const std::exception&) {
      // CONFIG may be disabled: keep Redis's default.
    }
    while (!g_stop.load() && !m_draining.load()) read_and_run();
    leave();
  }

 private:
  /// Sends `args` on `role` and waits for the reply; throws ConnectionError or a Redis error.
  RedisReply call(Role role, std::vector<std::string> args) {
    const std::string name = args.front();
    RedisReply reply = wait_for_reply(m_client, role, std::move(args));
    if (reply.is_error()) std::rethrow_exception(m_client.error_of(name, reply));
    return reply;
  }

  void unreachable(const ConnectionError& error) {
    if (!m_warned_unreachable.exchange(true))
      log_error(std::string("worker ") + m_id + ": " + error.what() + "; retrying");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }

  // ----- the I/O thread: heartbeat, announcements, orders -----

  WorkerRecord record() const {
    WorkerRecord record;
    record.host = host_name();
    record.pid = static_cast<int>(::getpid());
    record.fingerprint = m_fingerprint;
    record.ttl_ms = m_ttl_ms;
    record.concurrency = m_runner->concurrency();
    record.draining = m_draining.load();
    record.processes = m_options.processes;
    record.provides = m_provides;
    record.site = m_options.site;
    record.running = m_running_reported;
    record.rtt_us = m_rtt.microseconds();
    return record;
  }

  /// Runs on the client's I/O thread every interval: the heartbeat key, the registry entry, a
  /// look at the managers (to announce this worker to those of its build the first time, and to
  /// say once why one of another build gives it nothing) and the orders waiting for it.
  void heartbeat() {
    if (m_leaving) return;
    // The beat's own SET is the round trip measured (cluster/round_trip_time.hpp).
    m_client.send(Role::commands, {"SET", m_keys.heartbeat(m_id), m_fingerprint, "PX", std::to_string(m_ttl_ms)},
                  [this, sent = std::chrono::steady_clock::now()](std::exception_ptr error, RedisReply) {
                    if (!error) m_rtt.sample(std::chrono::steady_clock::now() - sent);
                  });
    m_running_reported = fewest_running_since_last_beat();
    m_client.send(Role::commands, {"HSET", m_keys.workers(), m_id, encode_worker_record(record())}, ignore);
    m_own.renew([this](bool present) { m_reader.watched_present(present); });
    m_client.send(Role::commands, {"HGETALL", m_keys.managers()}, [this](std::exception_ptr error, RedisReply reply) {
      if (error || reply.is_error() || m_leaving) return;
      std::vector<std::string> ours;
      for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
        const std::string& manager = reply.elements[i].str;
        const std::string& fingerprint = reply.elements[i + 1].str;
        if (fingerprint == m_fingerprint) {
          ours.push_back(manager);
          continue;
        }
        if (!m_warned_managers.insert(manager).second) continue;
        log_error("worker " + m_id + ": manager " + manager + " runs a different build (fingerprint " + fingerprint +
                  ", this worker " + m_fingerprint +
                  "), so this worker runs none of its tasks; start workers from that manager's very executable");
      }
      // A manager seen for the first time hears of this worker now, not at its next scan.
      std::vector<std::string> fresh;
      for (const auto& manager : ours)
        if (m_announced_to.insert(manager).second) fresh.push_back(manager);
      m_managers = std::move(ours);
      announce("j", fresh);
    });
    // The streams it may serve: a manager or class that came since the last beat is read from now.
    m_client.send(Role::commands, {"HGETALL", m_keys.classes(m_fingerprint)},
                  [this](std::exception_ptr error, RedisReply reply) {
                    if (!error && reply.type == RedisReply::Type::array && !m_leaving) m_reader.set_directory(reply);
                  });
    // The manager to serve first, as the matcher assigned it (cluster/matcher.hpp); none: round robin.
    m_client.send(Role::commands, {"GET", m_keys.assignment(m_id)}, [this](std::exception_ptr error, RedisReply reply) {
      if (!error && !m_leaving) m_reader.prefer(reply.type == RedisReply::Type::string ? reply.str : std::string());
    });
    // NOTE: LPOP takes each order once, so two heartbeats (or a restarted worker of the same id)
    // never both obey it.
    m_client.send(Role::commands, {"LPOP", m_keys.orders(m_id), "16"},
                  [this](std::exception_ptr error, RedisReply reply) {
                    if (error || reply.type != RedisReply::Type::array || m_leaving) return;
                    for (const RedisReply& order : reply.elements) take_order(order.str);
                  });
    m_client.post([this] { heartbeat(); }, m_interval_ms);
  }

  /// Adds a `kind` entry ("j" joined or changed, "x" leaving) with this worker's record to the
  /// results stream of each of `managers` (I/O thread).
  void announce(const char* kind, const std::vector<std::string>& managers) {
    if (managers.empty()) return;
    const std::string text = encode_worker_record(record());
    for (const auto& manager : managers)
      m_client.send(Role::commands,
                    {"XADD", m_keys.results(manager), "NOMKSTREAM", "*", "k", kind, "w", m_id, "p", text}, ignore);
  }

  /// An order from a manager (I/O thread): obeyed, the record renewed, every manager told of the
  /// change, and the manager that sent it told that it was taken.
  void take_order(const std::string& text) {
    std::optional<SentOrder> order = decode_order(text);
    if (!order) {
      log_error("worker " + m_id + ": ignored an order that does not decode: " + text.substr(0, 200));
      return;
    }
    if (order->fingerprint != m_fingerprint) {
      log_error("worker " + m_id + ": ignored an order from manager " + order->manager +
                ", which runs a different build (fingerprint " + order->fingerprint + ")");
      return;
    }
    stop_chunks(order->stop);
    const bool drains = abandon_chunks(order->manager, order->abandon);
    if (order->only_chunks() && !drains) return;
    if (order->threads) m_runner->set_concurrency(*order->threads);
    if (order->provides) {
      m_provides = with_site(*order->provides, m_options.site);
      m_amounts.set_provides(m_provides);
      m_reader.set_provides(m_provides);
      m_reader.wake();  // a class it now meets, or an amount it now has, is read at once
    }
    if (order->drain) m_draining = true;
    m_client.send(Role::commands, {"HSET", m_keys.workers(), m_id, encode_worker_record(record())}, ignore);
    announce("j", m_managers);
    m_client.send(Role::commands,
                  {"XADD", m_keys.results(order->manager), "NOMKSTREAM", "*", "k", "o", "w", m_id, "a",
                   std::to_string(order->id)},
                  ignore);
  }

  static void ignore(std::exception_ptr, RedisReply) {}

  /// What the heartbeat says it runs (WorkerRecord::running): the fewest chunks it ran when a read
  /// found room since the previous beat, or, when no read found any, what it holds now.
  std::size_t fewest_running_since_last_beat() {
    const std::size_t fewest = m_fewest_running.exchange(std::numeric_limits<std::size_t>::max());
    if (fewest != std::numeric_limits<std::size_t>::max()) return fewest;
    const std::size_t concurrency = m_runner->concurrency();
    std::lock_guard lock(m_held_mutex);
    return std::min(m_held.size(), concurrency);  // a chunk read ahead is not running yet
  }

  // ----- stopped chunks and progress -----

  /// A manager stopped the calls of these entries: their chunks see Scope::stop_requested() (a
  /// --scale-processes worker's pool tells the child, and kills it after the grace). An entry
  /// not held yet (its read is still on its way) starts stopped.
  void stop_chunks(const std::vector<std::string>& entries) {
    if (entries.empty()) return;
    std::lock_guard lock(m_held_mutex);
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(m_stopped_early, [&](const auto& item) { return now - item.second > std::chrono::minutes(1); });
    for (const std::string& entry : entries) {
      auto at = m_held.find(entry);
      if (at != m_held.end())
        at->second.control->request_stop();
      else
        m_stopped_early.emplace(entry, now);
    }
  }

  /// The manager no longer waits for these stopped entries. A child process running one is
  /// killed by the pool once the grace has passed; a thread cannot be, so a --scale-threads
  /// worker still running one says so and drains (true: the record changed).
  bool abandon_chunks(const std::string& manager, const std::vector<std::string>& entries) {
    if (entries.empty()) return false;
    std::vector<std::string> running;
    {
      std::lock_guard lock(m_held_mutex);
      for (const std::string& entry : entries) {
        auto at = m_held.find(entry);
        if (at == m_held.end()) continue;
        at->second.control->request_stop();
        // NOTE: one read ahead that has not started is not held up by a thread: it starts stopped
        // (Scope::stop_requested()), and chunks are read ahead only while they are short.
        if (at->second.control->has_started()) running.push_back(entry);
      }
    }
    if (running.empty() || m_options.processes) return false;
    std::string list;
    for (const auto& entry : running) list += (list.empty() ? "" : ", ") + entry;
    log_error("worker " + m_id + ": the stopped chunk(s) " + list + " of manager " + manager +
              " still run after the call's grace, and a thread cannot be stopped; this worker takes no more "
              "chunks and leaves once they return (run workers with --scale-processes N to have such a chunk's "
              "process killed instead)");
    m_draining = true;
    return true;
  }

  /// While chunks are held, a batch goes every progress_batch_ms (one timer, not one per chunk).
  void progress_pending() {
    if (!m_progress_flush_posted.exchange(true)) m_client.post([this] { flush_progress(); }, progress_batch_ms);
  }

  /// Sends the progress of every chunk that reported some since the last batch: one "g" entry
  /// each, on its manager's results stream (I/O thread); then the next batch, while chunks are held.
  void flush_progress() {
    m_progress_flush_posted = false;
    std::lock_guard lock(m_held_mutex);
    if (!m_held.empty()) progress_pending();
    for (auto& [entry, held] : m_held) {
      const std::optional<std::int64_t> units = held.control->take_progress();
      if (!units) continue;
      m_client.send(Role::commands,
                    {"XADD", held.results_stream, "NOMKSTREAM", "*", "k", "g", "w", m_id, "a", held.attempt, "p",
                     std::to_string(*units)},
                    ignore);
    }
  }

  // ----- the main thread: reading chunks -----

  /// Chunks read beyond the concurrency (core/short_chunks.hpp): only while chunks are short,
  /// and never with child processes (a chunk there may be slow to start or kill its child) or
  /// amounts provided (a chunk read holds its amounts, which another worker could use).
  std::size_t read_ahead() const {
    if (m_options.processes || !m_run_time.short_chunks() || !m_amounts.free().empty()) return 0;
    return (short_chunks_per_thread - 1) * m_runner->concurrency();
  }

  /// One read for as many chunks as there is room for (cluster/chunk_reader.hpp), each handed to
  /// the runner once it holds what its class needs.
  void read_and_run() {
    const std::size_t room = m_runner->wait_for_room(std::chrono::milliseconds(200), read_ahead());
    if (room == 0 || g_stop.load() || m_draining.load()) return;
    const std::size_t running = std::min(m_runner->concurrency(), m_runner->busy());
    for (std::size_t fewest = m_fewest_running.load(); running < fewest;)
      if (m_fewest_running.compare_exchange_weak(fewest, running)) break;
    // NOTE: a read waits at most 200 ms, so a drain or SIGTERM that comes while nothing is queued
    // ends the wait soon; the entries a read returns are this worker's to run, drain or not.
    std::size_t started = start_waiting(room);
    if (started == room) return;
    std::vector<ReadChunk> chunks;
    try {
      // The worker's own stream first, while it has entries (cluster/worker_stream.hpp).
      if (m_own.active()) chunks = m_own.read(room - started);
      if (chunks.empty()) chunks = m_reader.read(room - started, m_amounts);
      m_warned_unreachable = false;
    } catch (const ConnectionError& error) {
      unreachable(error);
      return;
    } catch (const Error& error) {
      log_error(std::string("worker ") + m_id + ": " + error.what());
      std::this_thread::sleep_for(std::chrono::seconds(1));
      return;
    }
    // Chunks only this worker may run go first.
    std::stable_partition(chunks.begin(), chunks.end(), [&](const ReadChunk& chunk) { return chunk.stream == m_own.key(); });
    for (ReadChunk& chunk : chunks) {
      const bool own = chunk.stream == m_own.key();
      if (own) {
        m_own.saw_entries();
        chunk.need = decode_amounts(field(chunk.fields, "n"));
      }
      if (!setups_ready(chunk)) {
        give_back(chunk);
        continue;
      }
      // NOTE: a read returns what fits, save one that came to a second stream in the instant
      // before a blocking read (chunk_reader.hpp): that one goes back to its manager. One of this
      // worker's own stream waits here instead: no other worker may run it.
      if (started == room || (!chunk.need.empty() && !m_amounts.hold(chunk.need))) {
        if (own)
          m_waiting.push_back(std::move(chunk));
        else
          give_back(chunk);
        continue;
      }
      ++started;
      start(std::move(chunk));
    }
  }

  /// Whether the chunk's manager's setups have run here (running those it lacks now); false when
  /// one threw (cluster/worker_setups.hpp).
  bool setups_ready(const ReadChunk& chunk) {
    try {
      return m_setups.ready(field(chunk.fields, "m"), field(chunk.fields, "s"));
    } catch (const std::exception& error) {
      log_error(std::string("worker ") + m_id + ": could not read a manager's setups: " + error.what());
      return false;
    }
  }

  /// Starts the chunks of its own stream that waited for room or amounts, as many as fit now.
  std::size_t start_waiting(std::size_t room) {
    std::size_t started = 0;
    for (auto at = m_waiting.begin(); at != m_waiting.end() && started < room;) {
      if (!at->need.empty() && !m_amounts.hold(at->need)) {
        ++at;
        continue;
      }
      start(std::move(*at));
      at = m_waiting.erase(at);
      ++started;
    }
    return started;
  }

  /// A chunk read that cannot start now goes back to its manager, which queues it again.
  void give_back(const ReadChunk& chunk) {
    give_back(m_keys.results(field(chunk.fields, "m")), field(chunk.fields, "a"));
  }
  void give_back(const std::string& results_stream, const std::string& attempt) {
    m_client.send(Role::commands,
                  {"XADD", results_stream, "NOMKSTREAM", "*", "k", "b", "w", m_id, "a", attempt}, ignore);
  }

  void start(ReadChunk chunk) {
    const RedisReply& fields = chunk.fields;
    auto delivery = std::make_shared<ResultDelivery>();
    delivery->results_stream = m_keys.results(field(fields, "m"));
    delivery->attempt = field(fields, "a");
    delivery->worker = m_id;
    delivery->tasks_stream = chunk.stream;
    delivery->entry_id = chunk.entry;
    const std::string key = chunk_key(chunk.stream, chunk.entry);
    {
      std::lock_guard lock(m_delivery_mutex);
      ++m_undelivered;
    }
    auto control = std::make_shared<RunningChunk>(grace_of(field(fields, "g")));
    {
      std::lock_guard lock(m_held_mutex);
      if (m_stopped_early.erase(key) != 0) control->request_stop();
      m_held.emplace(key, HeldChunk{control, delivery->results_stream, delivery->attempt});
    }
    progress_pending();
    // NOTE: a chunk read ahead waits here behind others. Should chunks have turned long
    // meanwhile (the one before it ran long), it goes back to its manager instead of waiting on
    // (a "b" entry: queued again, for whichever worker is free), unless only this worker may run
    // it (its own stream). One that runs after a wait has its entry's idle time in the group set
    // back to 0 (XCLAIM to itself, JUSTID: the delivery count stays), since that idle time is what
    // the manager's RunOptions::timeout measures: the time its worker has run it. Short chunks
    // rarely wait that long.
    auto starting = [this, control, own = chunk.stream == m_own.key(), stream = chunk.stream, entry = chunk.entry,
                     read_at = chunk.read_at] {
      const bool waited = std::chrono::steady_clock::now() - read_at >= std::chrono::milliseconds(1);
      if (waited && !own && !m_run_time.short_chunks()) return false;
      control->mark_started();
      if (waited)
        m_client.send(Role::commands, {"XCLAIM", stream, cluster_group, m_id, "0", entry, "JUSTID"}, ignore);
      return true;
    };
    m_runner->run(
        field(fields, "p"), control,
        [this, delivery, control, key, need = std::move(chunk.need)](ChunkOutcome outcome) {
          {
            std::lock_guard lock(m_held_mutex);
            m_held.erase(key);
          }
          if (!need.empty()) {
            m_amounts.release(need);
            m_reader.wake();
          }
          if (outcome.kind == ChunkOutcome::Kind::skipped) {
            give_back(delivery->results_stream, delivery->attempt);
            delivered(1);
            return;
          }
          m_run_time.add(outcome.took);
          // NOTE: a stopped chunk whose child the pool killed is not a lost chunk: it ends as stopped.
          if (control->stopped() && outcome.kind == ChunkOutcome::Kind::lost) {
            outcome.kind = ChunkOutcome::Kind::error;
            outcome.payload.clear();
            encode_exception(std::make_exception_ptr(Cancelled(cancelled_message())), outcome.payload);
          }
          delivery->kind = kind_letter(outcome.kind);
          delivery->took_us = outcome.took.count();
          delivery->payload = std::move(outcome.payload);
          if (delivery->payload.size() + redis_bulk_margin > m_bulk_limit) {
            const std::size_t size = delivery->payload.size();
            delivery->kind = 'e';
            delivery->payload = encoded_error("scale: Redis refused this chunk's result (" + std::to_string(size) +
                                              " bytes, more than its proto-max-bulk-len " +
                                              std::to_string(m_bulk_limit) +
                                              "); pass a smaller RunOptions::chunk_size");
          }
          deliver(std::move(delivery));
        },
        std::move(starting));
  }

  /// Sends a chunk's result, then acknowledges and removes its task entry (any thread). A
  /// delivery that could not reach Redis goes again; one that Redis refused (too large for it,
  /// say) is replaced by that error for the manager. Results sent together are answered in one
  /// read, and their task entries go in one XACK and one XDEL (acknowledge()).
  void deliver(std::shared_ptr<ResultDelivery> delivery) {
    m_client.send(Role::commands, delivery->add_result(), [this, delivery](std::exception_ptr error, RedisReply reply) {
      if (error) {
        m_client.post([this, delivery] { deliver(delivery); }, 200);
        return;
      }
      if (reply.is_error() && !delivery->refused) {
        delivery->refused = true;
        const std::size_t size = delivery->payload.size();
        delivery->kind = 'e';
        delivery->payload = encoded_error("scale: Redis refused this chunk's result (" + std::to_string(size) +
                                          " bytes): " + reply.str + "; pass a smaller RunOptions::chunk_size");
        deliver(delivery);
        return;
      }
      acknowledge(*delivery);
    });
  }

  /// The delivery's result is in Redis: its task entry is acknowledged and removed with those of
  /// the other results answered before the I/O thread is next free (I/O thread).
  void acknowledge(const ResultDelivery& delivery) {
    m_acks.add(delivery);
    if (m_acks_posted) return;
    m_acks_posted = true;
    m_client.post([this] { flush_acknowledgements(); });
  }

  void flush_acknowledgements() {
    m_acks_posted = false;
    m_acks.take([this](std::vector<std::string> ack, std::vector<std::string> del, std::size_t count) {
      m_client.send(Role::commands, std::move(ack), ignore);
      m_client.send(Role::commands, std::move(del), [this, count](std::exception_ptr, RedisReply) { delivered(count); });
    });
  }

  /// `count` chunks held are done with: delivered and acknowledged, or given back (any thread).
  void delivered(std::size_t count) {
    {
      std::lock_guard lock(m_delivery_mutex);
      m_undelivered -= count;
    }
    m_delivered.notify_all();
  }

  /// SIGTERM, SIGINT or a drain order: the chunks it holds run to the end and are delivered while
  /// the heartbeat goes on (so no manager takes them back); then it leaves the registry and the
  /// group, deletes its keys, tells its managers, and exits 0.
  [[noreturn]] void leave() {
    m_runner->wait_idle();
    {
      std::unique_lock lock(m_delivery_mutex);
      m_delivered.wait_for(lock, std::chrono::seconds(10), [&] { return m_undelivered == 0; });
    }
    // NOTE: on the I/O thread, where the heartbeat runs: once m_leaving is set there, no beat
    // renews the keys deleted below.
    std::promise<void> left;
    m_client.post([this, &left] {
      m_leaving = true;
      // NOTE: "x" first: a manager then queues elsewhere what it had on this worker's stream.
      announce("x", m_managers);
      m_own.remove();
      m_client.send(Role::commands, {"DEL", m_keys.heartbeat(m_id), m_keys.orders(m_id)}, ignore);
      m_client.send(Role::commands, {"HDEL", m_keys.workers(), m_id}, ignore);
      for (const std::string& stream : m_reader.streams_read())
        m_client.send(Role::commands, {"XGROUP", "DELCONSUMER", stream, cluster_group, m_id}, ignore);
      m_client.send(Role::commands, {"PING"}, [&left](std::exception_ptr, RedisReply) { left.set_value(); });
    });
    if (left.get_future().wait_for(std::chrono::seconds(5)) != std::future_status::ready)
      log_error("worker " + m_id + " leaving: Redis did not answer; its keys expire by themselves");
    std::fflush(nullptr);
    std::_Exit(0);
  }

  ClusterWorkerOptions m_options;
  RedisClient m_client;
  ClusterKeys m_keys;
  std::string m_id;
  std::string m_fingerprint;
  ChunkReader m_reader;
  HeldAmounts m_amounts;
  int m_interval_ms;
  int m_ttl_ms;
  WorkerStream m_own;
  WorkerSetups m_setups;                 // the main thread's
  std::list<ReadChunk> m_waiting;        // of its own stream, read and not started yet (main thread)
  std::unique_ptr<ChunkRunner> m_runner;
  std::atomic<bool> m_draining{false};
  std::atomic<bool> m_warned_unreachable{false};
  std::size_t m_bulk_limit = redis_default_bulk_limit;
  RoundTripTime m_rtt;
  // The fewest chunks running when a read found room since the last beat (max: no read did).
  std::atomic<std::size_t> m_fewest_running{std::numeric_limits<std::size_t>::max()};
  // The I/O thread's.
  bool m_leaving = false;
  std::set<std::string> m_warned_managers;
  std::set<std::string> m_announced_to;
  std::vector<std::string> m_managers;  // of this build, as of the last heartbeat
  std::size_t m_running_reported = 0;   // WorkerRecord::running as of the last heartbeat
  Provides m_provides;
  // The chunks held now, by task entry, and stops that came before their entry was held.
  std::mutex m_held_mutex;
  std::map<std::string, HeldChunk> m_held;
  std::map<std::string, std::chrono::steady_clock::time_point> m_stopped_early;
  std::atomic<bool> m_progress_flush_posted{false};
  SmoothedRunTime m_run_time;  // of its chunks here (read_ahead)
  // Task entries whose results are in Redis, acknowledged together (the I/O thread's).
  TaskAcknowledgements m_acks;
  bool m_acks_posted = false;
  // Results not yet in Redis.
  std::mutex m_delivery_mutex;
  std::condition_variable m_delivered;
  std::size_t m_undelivered = 0;
};

}  // namespace

void serve_cluster_worker(const ClusterWorkerOptions& options) {
  std::unique_ptr<ClusterWorkerProcess> worker;
  try {
    worker = std::make_unique<ClusterWorkerProcess>(options);
  } catch (const std::exception& error) {
    log_error(std::string("--scale-worker: ") + error.what());
    std::fflush(nullptr);
    std::_Exit(2);
  }
  // NOTE: never destroyed: the process ends with _Exit while the client's I/O thread still runs.
  worker.release()->serve();
}

}  // namespace scale::detail
