// The chunks of a cluster worker, on its threads or its own process pool (cluster/chunk_runner.hpp).

#include "cluster/chunk_runner.hpp"

#include <algorithm>
#include <exception>
#include <optional>
#include <utility>

#include <scale/iterator.hpp>
#include <scale/managers/process_pool.hpp>

#include "cluster/child_chunk_control.hpp"
#include "cluster/running_chunk.hpp"
#include "remote/task_payload.hpp"
#include "remote/wire_error.hpp"

namespace scale::detail {

namespace {

using Clock = std::chrono::steady_clock;

/// What a --scale-processes worker's child runs: one whole task payload, its answer prefixed
/// with 'r' (results) or 'e' (an encoded exception). A chunk of the cluster is one item here, so
/// the child's death loses that one item of the nested pool, and the cluster's manager decides
/// how to rerun it (split, retry, or WorkerLost naming the item in the call). The item's stop
/// request and progress are the chunk's (cluster/child_chunk_control.hpp).
auto run_payload_in_child = [](const std::string& payload, Scope& scope) {
  std::string out(1, 'r');
  std::string answer;
  std::size_t items = 1;
  try {
    items = task_payload_count(payload);
  } catch (const std::exception&) {
    // run_task_payload reports the bad payload below.
  }
  ChildChunkControl control(scope, items);
  if (!run_task_payload(payload, nullptr, nullptr, answer, &control)) out[0] = 'e';
  out += answer;
  return out;
};

/// A setup in a --scale-processes worker's child: the payload the worker itself ran, run again
/// here; what it throws fails the child's setup (the pool then keeps that child from chunks).
auto run_setup_in_child = [](const std::string& payload) {
  std::string answer;
  if (!run_task_payload(payload, nullptr, nullptr, answer, nullptr)) std::rethrow_exception(decode_exception(answer));
};

/// The loss as the manager gets it: the child pool's WorkerLost, whose capsule (when the child died
/// of a crash signal) has the index within the cluster chunk; its item, here the pool's own item
/// (the payload), is the manager's to fill in.
std::string lost_payload(const WorkerLost& lost) {
  std::optional<CrashReport> capsule = lost.capsule();
  if (capsule) capsule->item.clear();
  std::string out;
  encode_exception(std::make_exception_ptr(WorkerLost(0, lost.status(), lost.attempts(), std::move(capsule))), out);
  return out;
}

std::chrono::microseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
}

}  // namespace

ChunkRunner::ChunkRunner(std::size_t concurrency, bool processes)
    : m_processes(processes), m_target(std::max<std::size_t>(1, concurrency)) {
  {
    std::lock_guard lock(m_mutex);
    grow_locked();
  }
  if (m_processes) pool();  // its children start now, not with the first chunk
}

ChunkRunner::~ChunkRunner() {
  {
    std::unique_lock lock(m_mutex);
    m_room.wait(lock, [&] { return m_busy == 0; });
    m_stopping = true;
  }
  m_work.notify_all();
  for (auto& thread : m_threads)
    if (thread.joinable()) thread.join();
}

void ChunkRunner::grow_locked() {
  while (m_threads_alive < m_target) {
    ++m_threads_alive;
    m_threads.emplace_back([this, index = m_threads.size()] { serve(index); });
  }
}

std::size_t ChunkRunner::wait_for_room(std::chrono::milliseconds limit, std::size_t ahead) {
  std::unique_lock lock(m_mutex);
  m_room.wait_for(lock, limit, [&] { return m_busy < m_target + ahead; });
  return m_busy < m_target + ahead ? m_target + ahead - m_busy : 0;
}

void ChunkRunner::run(std::string payload, std::shared_ptr<RunningChunk> control, Done done,
                      std::function<bool()> starting) {
  Item item{std::move(payload), std::move(control), std::move(done), std::move(starting)};
  {
    std::lock_guard lock(m_mutex);
    ++m_busy;
    // NOTE: here only while nothing else is given, so chunks still start in the order given.
    if (!m_processes && m_target == 1 && m_busy == 1) {
      // Falls through to run it on this thread, below.
    } else {
      m_queue.push_back(std::move(item));
      item.done = nullptr;
    }
  }
  if (!item.done) {
    m_work.notify_one();
    return;
  }
  execute(item);
  item = Item{};
  {
    std::lock_guard lock(m_mutex);
    --m_busy;
  }
  m_room.notify_all();
}

std::size_t ChunkRunner::busy() const {
  std::lock_guard lock(m_mutex);
  return m_busy;
}

void ChunkRunner::set_concurrency(std::size_t concurrency) {
  {
    std::lock_guard lock(m_mutex);
    m_target = std::max<std::size_t>(1, concurrency);
    grow_locked();
  }
  m_work.notify_all();  // a thread to retire, or queued items for the new threads
  m_room.notify_all();  // room for more
}

std::size_t ChunkRunner::concurrency() const {
  std::lock_guard lock(m_mutex);
  return m_target;
}

void ChunkRunner::wait_idle() {
  std::unique_lock lock(m_mutex);
  m_room.wait(lock, [&] { return m_busy == 0; });
}

void ChunkRunner::execute(Item& item) {
  if (item.starting && !item.starting()) {
    ChunkOutcome skipped;
    skipped.kind = ChunkOutcome::Kind::skipped;
    item.done(std::move(skipped));
    return;
  }
  ChunkOutcome outcome =
      m_processes ? run_in_child(item.payload, *item.control) : run_here(item.payload, *item.control);
  item.done(std::move(outcome));
}

void ChunkRunner::serve(std::size_t) {
  std::unique_lock lock(m_mutex);
  for (;;) {
    m_work.wait(lock, [&] { return m_stopping || !m_queue.empty() || m_threads_alive > m_target; });
    if (m_queue.empty() && (m_stopping || m_threads_alive > m_target)) {
      --m_threads_alive;  // retires; joined by the destructor
      return;
    }
    // NOTE: one that retires leaves the queue to the others; it was woken for the queue only if
    // it is the only one, and then it is not above the target.
    if (m_threads_alive > m_target) {
      --m_threads_alive;
      m_work.notify_one();  // the item goes to another thread
      return;
    }
    Item item = std::move(m_queue.front());
    m_queue.pop_front();
    lock.unlock();
    execute(item);
    item = Item{};
    lock.lock();
    --m_busy;
    m_room.notify_all();
  }
}

ChunkOutcome ChunkRunner::run_here(const std::string& payload, RunningChunk& control) {
  ChunkOutcome outcome;
  const auto start = Clock::now();
  const bool ok = run_task_payload(payload, nullptr, nullptr, outcome.payload, &control);
  outcome.took = since(start);
  outcome.kind = ok ? ChunkOutcome::Kind::results : ChunkOutcome::Kind::error;
  return outcome;
}

std::shared_ptr<ProcessPoolManager> ChunkRunner::pool() {
  std::size_t size;
  {
    std::lock_guard lock(m_mutex);
    if (m_pool && m_pool_size == m_target) return m_pool;
    size = m_target;
  }
  // NOTE: made outside the lock (it starts its children); the pool it replaces lives on in the
  // chunks still running on it and goes when the last of them ends.
  auto made = std::make_shared<ProcessPoolManager>(ProcessPoolOptions{
      .max_workers = size, .min_workers = size, .idle_timeout = std::chrono::hours(24), .max_retries = 0});
  std::lock_guard lock(m_mutex);
  if (!m_pool || m_pool_size != size) {
    for (const auto& setup : m_setups) made->add_setup(setup);
    m_pool = std::move(made);
    m_pool_size = size;
  }
  return m_pool;
}

void ChunkRunner::add_setup(std::string payload) {
  if (!m_processes) return;
  using Setup = ForEachJob<std::string, decltype(run_setup_in_child)>;
  auto item = std::make_shared<const std::vector<std::string>>(1, std::move(payload));
  auto setup = std::make_shared<Setup>(std::move(item), run_setup_in_child, nullptr, nullptr, TaskPolicy{});
  std::shared_ptr<ProcessPoolManager> current;
  {
    std::lock_guard lock(m_mutex);
    m_setups.push_back(setup);
    current = m_pool;
  }
  if (current) current->add_setup(std::move(setup));
}

void ChunkRunner::relay_control(const std::string& payload, RunningChunk& control, RunOptions& options) {
  // The pool tells the child of a stop and kills it once the grace has passed.
  options.stop = control.stop_token();
  options.grace = control.grace();
  std::size_t items = 1;
  try {
    items = task_payload_count(payload);
  } catch (const std::exception&) {
    // The child reports the bad payload.
  }
  // The pool's fraction of its one item is the chunk's fraction (child_chunk_control.hpp).
  options.on_progress = [&control, items](const Progress& progress) {
    if (progress.fraction < 1.0) control.set_progress(progress.fraction * static_cast<double>(items));
  };
}

ChunkOutcome ChunkRunner::run_in_child(const std::string& payload, RunningChunk& control) {
  ChunkOutcome outcome;
  const auto start = Clock::now();
  try {
    std::shared_ptr<ProcessPoolManager> children = pool();
    Iterator<std::string> one(std::vector<std::string>{payload}, *children);
    RunOptions options;
    options.chunk_size = 1;
    options.max_retries = 0;  // a child's death goes back to the manager, which decides what runs again
    relay_control(payload, control, options);
    Future<std::vector<std::string>> answer = one.map(run_payload_in_child, std::move(options));
    std::vector<std::string> answers = answer.get();
    outcome.took = since(start);
    if (answers.size() != 1 || answers[0].empty()) throw Error("scale: the worker's child gave no answer");
    outcome.kind = answers[0][0] == 'r' ? ChunkOutcome::Kind::results : ChunkOutcome::Kind::error;
    outcome.payload.assign(answers[0], 1);
  } catch (const WorkerLost& lost) {
    outcome.took = since(start);
    outcome.kind = ChunkOutcome::Kind::lost;
    outcome.payload = lost_payload(lost);
  } catch (...) {
    outcome.took = since(start);
    outcome.kind = ChunkOutcome::Kind::error;
    outcome.payload.clear();
    encode_exception(std::current_exception(), outcome.payload);
  }
  return outcome;
}

}  // namespace scale::detail
