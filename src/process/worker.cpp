// The TaskRegistry, the build fingerprint, and the worker's serve loop with the Scope backends
// that reach the parent's memory and emitter over the link.

#include <scale/detail/task_registry.hpp>
#include "process/worker.hpp"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include <scale/detail/event_backend.hpp>
#include <scale/detail/memory_backend.hpp>
#include <scale/detail/wire.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>

namespace scale::detail {

// ----- registry -------------------------------------------------------------------------------

namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, TaskEntry, std::less<>> tasks;
  std::set<std::string, std::less<>> ambiguous;
};

Registry& registry() {
  static Registry* instance = new Registry();  // used during static initialization; never destroyed
  return *instance;
}

std::mutex g_arguments_mutex;
std::vector<std::string> g_arguments;

}  // namespace

std::string register_task(const char* type, const void* anchor, TaskEntry entry) {
  std::uintptr_t offset = reinterpret_cast<std::uintptr_t>(anchor);
  Dl_info info{};
  if (dladdr(anchor, &info) != 0 && info.dli_fbase != nullptr) {
    offset -= reinterpret_cast<std::uintptr_t>(info.dli_fbase);
  }
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, "@%llx", static_cast<unsigned long long>(offset));
  std::string name = std::string(type) + suffix;
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  auto [at, inserted] = r.tasks.emplace(name, entry);
  if (!inserted && at->second.invoke != entry.invoke) r.ambiguous.insert(name);
  return name;
}

TaskEntry find_task(std::string_view name) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  if (r.ambiguous.count(name) != 0)
    throw Error("scale: task '" + std::string(name) +
                "' was registered twice with different functions; it cannot run in another process");
  auto at = r.tasks.find(name);
  if (at == r.tasks.end())
    throw Error("scale: this worker has no task '" + std::string(name) +
                "'; the worker runs a different build of the executable than its manager");
  return at->second;
}

/// The executable's GNU build id (the linker's hash of its contents, `readelf -n`), or empty when
/// it was linked without one.
const std::string& gnu_build_id() {
  static const std::string id = [] {
    std::string found;
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* out) -> int {
          // The first object is the executable itself.
          for (int i = 0; i < info->dlpi_phnum; ++i) {
            const auto& header = info->dlpi_phdr[i];
            if (header.p_type != PT_NOTE) continue;
            const char* at = reinterpret_cast<const char*>(info->dlpi_addr + header.p_vaddr);
            const char* end = at + header.p_memsz;
            while (at + sizeof(ElfW(Nhdr)) <= end) {
              ElfW(Nhdr) note;
              std::memcpy(&note, at, sizeof note);
              const char* name = at + sizeof note;
              const char* desc = name + ((note.n_namesz + 3) & ~3u);
              const char* next = desc + ((note.n_descsz + 3) & ~3u);
              if (next > end) break;
              if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
                static_cast<std::string*>(out)->assign(desc, note.n_descsz);
                return 1;
              }
              at = next;
            }
          }
          return 1;
        },
        &found);
    return found;
  }();
  return id;
}

std::string build_fingerprint() {
  std::uint64_t hash = 1469598103934665603ull;  // FNV-1a
  auto mix = [&](std::string_view bytes) {
    for (unsigned char c : bytes) {
      hash ^= c;
      hash *= 1099511628211ull;
    }
    hash ^= 0xff;
    hash *= 1099511628211ull;
  };
  {
    auto& r = registry();
    std::lock_guard lock(r.mutex);
    for (auto& [name, entry] : r.tasks) mix(name);
  }
  // NOTE: a test hook: processes whose SCALE_FINGERPRINT_SALT differs count as different builds.
  if (const char* salt = std::getenv("SCALE_FINGERPRINT_SALT")) mix(salt);
  // The build id names the executable's contents, so a copy on another server (scp without -p,
  // a container image) matches; without one, its size and modification time stand in.
  if (!gnu_build_id().empty()) {
    mix(gnu_build_id());
  } else if (struct stat st {}; ::stat("/proc/self/exe", &st) == 0) {
    mix(std::to_string(st.st_size));
    mix(std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec));
  }
  char text[32];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

std::uint64_t read_le(std::string_view bytes, std::size_t& offset, std::size_t size) {
  if (offset + size > bytes.size()) throw Error("scale: a task frame ends early; the peer speaks another protocol");
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < size; ++i)
    value |= std::uint64_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
  offset += size;
  return value;
}

std::vector<std::string> program_arguments() {
  std::lock_guard lock(g_arguments_mutex);
  return g_arguments;
}

void set_program_arguments(std::vector<std::string> arguments) {
  std::lock_guard lock(g_arguments_mutex);
  g_arguments = std::move(arguments);
}

// ----- the parent answers scope requests ------------------------------------------------------

namespace {

nlohmann::json entry_to_json(const Entry& entry) {
  return {{"key", entry.key}, {"value", entry.value}, {"revision", entry.revision}, {"timestamp_ms", entry.timestamp_ms}};
}

Entry entry_from_json(const nlohmann::json& json) {
  return Entry{json.at("key").get<std::string>(), json.at("value"), json.at("revision").get<Revision>(),
               json.at("timestamp_ms").get<std::int64_t>()};
}

nlohmann::json run_scope_call(SharedMemory* memory, SharedEventEmitter* events, const nlohmann::json& request) {
  const std::string op = request.at("op").get<std::string>();
  if (op == "emit") {
    if (!events) throw Error("scale: scope.emit needs iterator.use_scope(memory, events)");
    events->emit(request.at("event").get<std::string>(), request.at("payload")).get();
    return nullptr;
  }
  if (!memory) throw Error("scale: this function uses the scope but the Iterator has no shared state: call use_scope");
  if (op == "set") return memory->set(request.at("object")).get();
  if (op == "entry") {
    auto found = memory->entry(request.at("key").get<std::string>()).get();
    return found ? entry_to_json(*found) : nlohmann::json(nullptr);
  }
  if (op == "erase") return memory->erase(request.at("key").get<std::string>()).get();
  if (op == "cas")
    return MemoryAccess::backend(*memory)
        .compare_and_set_revision(request.at("key").get<std::string>(), request.at("expected").get<Revision>(),
                                  request.at("value"))
        .get();
  if (op == "increment") {
    Incremented done = MemoryAccess::backend(*memory)
                           .increment_with_revision(request.at("key").get<std::string>(),
                                                    request.at("by").get<std::int64_t>())
                           .get();
    return {{"value", done.value}, {"revision", done.revision}};
  }
  if (op == "list") {
    nlohmann::json entries = nlohmann::json::array();
    for (auto& entry : memory->list(request.at("prefix").get<std::string>()).get()) entries.push_back(entry_to_json(entry));
    return entries;
  }
  throw Error("scale: unknown scope call '" + op + "' from a worker");
}

}  // namespace

std::string answer_scope_request(SharedMemory* memory, SharedEventEmitter* events, std::string_view request) {
  std::string reply;
  try {
    auto call = nlohmann::json::from_msgpack(request.begin(), request.end(), /*strict=*/true);
    nlohmann::json value = run_scope_call(memory, events, call);
    reply.push_back('\0');
    nlohmann::json::to_msgpack(value, reply);
  } catch (...) {
    reply.assign(1, '\1');
    encode_exception(std::current_exception(), reply);
  }
  return reply;
}

// ----- the worker -------------------------------------------------------------------------------

namespace {

/// The worker's side of its link: one writer lock, replies matched to pending scope calls.
class WorkerLink {
 public:
  explicit WorkerLink(ChildLink link) : m_link(link) {}

  void send(FrameType type, std::uint64_t id, std::string_view payload) {
    std::string frame;
    encode_frame(frame, type, id, payload);
    std::lock_guard lock(m_write_mutex);
    if (!send_all(m_link.fd, frame)) leave();
  }

  Future<nlohmann::json> call(nlohmann::json request) {
    Promise<nlohmann::json> promise;
    Future<nlohmann::json> reply = promise.get_future();
    std::string payload;
    nlohmann::json::to_msgpack(request, payload);
    std::uint64_t id;
    {
      std::lock_guard lock(m_mutex);
      id = ++m_next_id;
      m_pending.emplace(id, std::move(promise));
    }
    send(FrameType::scope_request, id, payload);
    return reply;
  }

  /// The reader thread: tasks to the queue, replies to their callers; exits the process on EOF.
  void read_loop() {
    // NOTE: a receive timeout instead of a poll() per frame: one system call per read, and still a
    // getppid() check every second when the link is quiet.
    timeval second{1, 0};
    ::setsockopt(m_link.fd, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second);
    FrameReader reader;
    for (;;) {
      auto room = reader.prepare();
      ssize_t n = ::read(m_link.fd, room.data(), room.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (::getppid() != m_link.parent_pid) leave();
        continue;
      }
      if (n <= 0) leave();
      reader.commit(static_cast<std::size_t>(n));
      try {
        while (auto frame = reader.next()) dispatch(std::move(*frame));
      } catch (const std::exception& error) {
        log_error(std::string("worker: bad frame from the manager: ") + error.what());
        leave();
      }
    }
  }

  /// The next task for the executor thread, waiting for one; call task_done() after it.
  Frame next_task() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return !m_tasks.empty() && !m_busy; });
    m_busy = true;
    Frame frame = std::move(m_tasks.front());
    m_tasks.pop_front();
    return frame;
  }

  void task_done() {
    {
      std::lock_guard lock(m_mutex);
      m_busy = false;
    }
    m_cv.notify_one();
  }

  /// Runs a task: set before the reader starts.
  std::function<void(const Frame&)> runner;

  [[noreturn]] static void leave() {
    std::fflush(nullptr);
    std::_Exit(0);
  }

 private:
  void dispatch(Frame frame) {
    switch (frame.type) {
      case FrameType::task: {
        // NOTE: a task whose function takes no Scope makes no call this reader must answer, so
        // when nothing else is running or waiting it runs right here, saving a thread hop per task.
        // Others go to the executor thread, so that this thread stays free to read scope replies.
        bool run_here = false;
        {
          std::lock_guard lock(m_mutex);
          if (!m_busy && m_tasks.empty() && !uses_scope(frame.payload)) {
            m_busy = true;
            run_here = true;
          } else {
            m_tasks.push_back(std::move(frame));
          }
        }
        if (run_here) {
          runner(frame);
          task_done();
        } else {
          m_cv.notify_one();
        }
        return;
      }
      case FrameType::scope_reply: {
        std::optional<Promise<nlohmann::json>> promise;
        {
          std::lock_guard lock(m_mutex);
          auto at = m_pending.find(frame.id);
          if (at == m_pending.end()) return;
          promise.emplace(std::move(at->second));
          m_pending.erase(at);
        }
        std::string_view payload = frame.payload;
        try {
          if (payload.empty()) throw Error("scale: an empty scope reply from the manager");
          if (payload[0] == '\0') {
            auto value = nlohmann::json::from_msgpack(payload.begin() + 1, payload.end(), /*strict=*/true);
            promise->set_value(std::move(value));
          } else {
            throw decode_exception(payload.substr(1));
          }
        } catch (...) {
          promise->set_exception(std::current_exception());
        }
        return;
      }
      case FrameType::shutdown:
        leave();
      default:
        return;
    }
  }

  static bool uses_scope(std::string_view payload) {
    try {
      std::size_t offset = 0;
      const auto length = static_cast<std::size_t>(read_le(payload, offset, 4));
      if (offset + length > payload.size()) return true;
      return find_task(payload.substr(offset, length)).uses_scope;
    } catch (...) {
      return true;  // the executor reports the error
    }
  }

  ChildLink m_link;
  bool m_busy = false;  // a task is running (on either thread)
  std::mutex m_write_mutex;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::deque<Frame> m_tasks;
  std::unordered_map<std::uint64_t, Promise<nlohmann::json>> m_pending;
  std::uint64_t m_next_id = 0;
};

template <class R>
Future<R> reply_as(Future<nlohmann::json> reply) {
  nlohmann::json value = co_await std::move(reply);
  co_return value.get<R>();
}

Future<std::optional<Entry>> reply_as_entry(Future<nlohmann::json> reply) {
  nlohmann::json value = co_await std::move(reply);
  if (value.is_null()) co_return std::nullopt;
  co_return entry_from_json(value);
}

Future<std::vector<Entry>> reply_as_entries(Future<nlohmann::json> reply) {
  nlohmann::json value = co_await std::move(reply);
  std::vector<Entry> entries;
  for (auto& entry : value) entries.push_back(entry_from_json(entry));
  co_return entries;
}

Future<Incremented> reply_as_incremented(Future<nlohmann::json> reply) {
  nlohmann::json value = co_await std::move(reply);
  Incremented done{value.at("value").get<std::int64_t>(), value.at("revision").get<Revision>()};
  co_return done;
}

Future<void> reply_as_void(Future<nlohmann::json> reply) { co_await std::move(reply); }

/// A SharedMemory in a worker: every call is answered by the parent's memory.
class LinkMemory final : public MemoryBackend {
 public:
  explicit LinkMemory(WorkerLink* link) : m_link(link) {}
  Future<Revision> set_many(nlohmann::json object) override {
    nlohmann::json request = {{"op", "set"}, {"object", std::move(object)}};
    return reply_as<Revision>(m_link->call(std::move(request)));
  }
  Future<std::optional<Entry>> entry(std::string key) override {
    nlohmann::json request = {{"op", "entry"}, {"key", std::move(key)}};
    return reply_as_entry(m_link->call(std::move(request)));
  }
  Future<bool> erase(std::string key) override {
    nlohmann::json request = {{"op", "erase"}, {"key", std::move(key)}};
    return reply_as<bool>(m_link->call(std::move(request)));
  }
  Future<Revision> compare_and_set_revision(std::string key, Revision expected, nlohmann::json value) override {
    nlohmann::json request = {{"op", "cas"}, {"key", std::move(key)}, {"expected", expected}, {"value", std::move(value)}};
    return reply_as<Revision>(m_link->call(std::move(request)));
  }
  Future<Incremented> increment_with_revision(std::string key, std::int64_t by) override {
    nlohmann::json request = {{"op", "increment"}, {"key", std::move(key)}, {"by", by}};
    return reply_as_incremented(m_link->call(std::move(request)));
  }
  Future<std::vector<Entry>> list(std::string prefix) override {
    nlohmann::json request = {{"op", "list"}, {"prefix", std::move(prefix)}};
    return reply_as_entries(m_link->call(std::move(request)));
  }
  void watch(std::string, Revision, std::shared_ptr<SubscriptionQueue<Change>> queue) override {
    queue->set_error(std::make_exception_ptr(
        Error("scale: watch is not available inside a process-pool worker; watch in the parent")));
  }

 private:
  WorkerLink* m_link;
};

class LinkEvents final : public EventBackend {
 public:
  explicit LinkEvents(WorkerLink* link) : m_link(link) {}
  Future<void> emit(std::string event, nlohmann::json payload) override {
    nlohmann::json request = {{"op", "emit"}, {"event", std::move(event)}, {"payload", std::move(payload)}};
    return reply_as_void(m_link->call(std::move(request)));
  }
  void subscribe(std::string, std::shared_ptr<SubscriptionQueue<nlohmann::json>> queue) override {
    queue->set_error(std::make_exception_ptr(
        Error("scale: subscribing is not available inside a process-pool worker; subscribe in the parent")));
  }

 private:
  WorkerLink* m_link;
};

/// The memory or emitter a task names by URL, opened once per URL and kept for the worker's life.
template <class Handle>
Handle* opened(std::string_view url) {
  static std::mutex mutex;
  static std::map<std::string, Handle, std::less<>> handles;
  std::lock_guard lock(mutex);
  auto found = handles.find(url);
  if (found == handles.end()) found = handles.emplace(std::string(url), Handle(std::string(url))).first;
  return &found->second;
}

std::string_view read_url(std::string_view payload, std::size_t& offset) {
  const auto length = static_cast<std::size_t>(read_le(payload, offset, 4));
  if (offset + length > payload.size()) throw Error("scale: a task frame ends early");
  std::string_view url = payload.substr(offset, length);
  offset += length;
  return url;
}

void run_task(WorkerLink& link, SharedMemory& memory, SharedEventEmitter& events, const Frame& frame) {
  std::string out;
  const bool ok = run_task_payload(frame.payload, &memory, &events, out);
  link.send(ok ? FrameType::result : FrameType::error, frame.id, out);
}

}  // namespace

bool run_task_payload(std::string_view payload, SharedMemory* memory, SharedEventEmitter* events, std::string& out) {
  try {
    std::size_t offset = 0;
    const auto name_length = static_cast<std::size_t>(read_le(payload, offset, 4));
    if (offset + name_length > payload.size()) throw Error("scale: a task frame ends early");
    std::string_view name = payload.substr(offset, name_length);
    offset += name_length;
    const auto flags = static_cast<unsigned char>(read_le(payload, offset, 1));
    // A memory (emitter) with a URL is opened here, so scope calls go straight to its store.
    SharedMemory* memory_target = memory;
    SharedEventEmitter* events_target = events;
    if (flags & task_memory_url) memory_target = opened<SharedMemory>(read_url(payload, offset));
    if (flags & task_events_url) events_target = opened<SharedEventEmitter>(read_url(payload, offset));
    if (((flags & task_has_memory) && !memory_target) || ((flags & task_has_events) && !events_target))
      throw Error("scale: this worker cannot reach an in-process SharedMemory or SharedEventEmitter; create them "
                  "with an http:// or redis:// URL");
    TaskInput input;
    input.count = static_cast<std::size_t>(read_le(payload, offset, 8));
    const auto extra_length = static_cast<std::size_t>(read_le(payload, offset, 4));
    if (offset + extra_length > payload.size()) throw Error("scale: a task frame ends early");
    input.extra = payload.substr(offset, extra_length);
    input.items = payload.substr(offset + extra_length);
    input.memory = (flags & task_has_memory) ? memory_target : nullptr;
    input.events = (flags & task_has_events) ? events_target : nullptr;
    find_task(name).invoke(input, out);
    if (out.size() > default_max_payload)
      throw Error("scale: the results of one chunk take " + std::to_string(out.size()) +
                  " bytes, over the frame limit; pass a smaller RunOptions::chunk_size");
  } catch (...) {
    out.clear();
    encode_exception(std::current_exception(), out);
    return false;
  }
  return true;
}

void append_task_payload(const Chunk& chunk, std::string& out) {
  const Job& job = *chunk.job;
  const std::string& name = job.task_name();
  append_u32(out, static_cast<std::uint32_t>(name.size()));
  out += name;
  const SharedMemory* memory = job.scope_memory();
  const SharedEventEmitter* events = job.scope_events();
  const bool memory_url = memory && !memory->url().empty();
  const bool events_url = events && !events->url().empty();
  unsigned char flags = 0;
  if (memory) flags |= task_has_memory;
  if (events) flags |= task_has_events;
  if (memory_url) flags |= task_memory_url;
  if (events_url) flags |= task_events_url;
  out.push_back(static_cast<char>(flags));
  for (const std::string* url : {memory_url ? &memory->url() : nullptr, events_url ? &events->url() : nullptr}) {
    if (!url) continue;
    append_u32(out, static_cast<std::uint32_t>(url->size()));
    out += *url;
  }
  append_u64(out, chunk.size());
  job.encode_task(chunk.begin, chunk.end, out);
}

LostChunk on_lost_chunk(const Chunk& chunk, unsigned& attempts, unsigned max_retries, const std::string& status) {
  if (chunk.size() > 1 && chunk.job->splittable() && max_retries > 0) {
    attempts = 0;
    return LostChunk{LostChunk::Kind::split, chunk.begin + chunk.size() / 2, nullptr};
  }
  ++attempts;
  if (attempts > max_retries)
    return LostChunk{LostChunk::Kind::give_up, 0,
                     std::make_exception_ptr(WorkerLost(chunk.begin, status, static_cast<int>(attempts)))};
  return LostChunk{LostChunk::Kind::retry, 0, nullptr};
}

void serve_as_worker(const ChildLink& child) {
  // NOTE: never destroyed: the process ends with _Exit while the reader thread still runs.
  auto* link = new WorkerLink(child);
  SharedMemory memory(std::make_shared<LinkMemory>(link));
  SharedEventEmitter events(std::make_shared<LinkEvents>(link));
  link->runner = [link, &memory, &events](const Frame& task) { run_task(*link, memory, events, task); };
  link->send(FrameType::hello, 0, build_fingerprint());
  std::thread([link] { link->read_loop(); }).detach();
  for (;;) {
    Frame task = link->next_task();
    run_task(*link, memory, events, task);
    link->task_done();
  }
}

}  // namespace scale::detail
