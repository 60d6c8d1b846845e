// The task payload codec and the lost-chunk policy (remote/task_payload.hpp).

#include "remote/task_payload.hpp"

#include <map>
#include <mutex>
#include <optional>

#include <scale/detail/bytes.hpp>
#include <scale/detail/task_registry.hpp>
#include <scale/detail/wire.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>

#include "remote/wire_error.hpp"

namespace scale::detail {

namespace {

constexpr const char* payload_what = "a task payload";

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

}  // namespace

void append_task_payload(const Chunk& chunk, std::string& out) {
  const Job& job = *chunk.job;
  ByteWriter writer(out);
  writer.sized(job.task_name());
  const SharedMemory* memory = job.scope_memory();
  const SharedEventEmitter* events = job.scope_events();
  const bool memory_url = memory && !memory->url().empty();
  const bool events_url = events && !events->url().empty();
  unsigned char flags = 0;
  if (memory) flags |= task_has_memory;
  if (events) flags |= task_has_events;
  if (memory_url) flags |= task_memory_url;
  if (events_url) flags |= task_events_url;
  writer.u8(flags);
  if (memory_url) writer.sized(memory->url());
  if (events_url) writer.sized(events->url());
  writer.u64(chunk.size());
  const std::size_t extra_at = writer.reserve_u32();
  job.encode_extra(out);
  writer.end_sized(extra_at);
  job.encode_items(chunk.begin, chunk.end, out);
}

std::string_view task_payload_name(std::string_view payload) { return ByteReader(payload, payload_what).sized(); }

std::size_t task_payload_count(std::string_view payload) {
  ByteReader reader(payload, payload_what);
  reader.sized();
  const unsigned char flags = reader.u8();
  if (flags & task_memory_url) reader.sized();
  if (flags & task_events_url) reader.sized();
  return static_cast<std::size_t>(reader.u64());
}

bool run_task_payload(std::string_view payload, SharedMemory* memory, SharedEventEmitter* events, std::string& out,
                      ChunkControl* control) {
  try {
    ByteReader reader(payload, payload_what);
    const std::string_view name = reader.sized();
    const unsigned char flags = reader.u8();
    // A memory (emitter) with a URL is opened here, so scope calls go straight to its store.
    SharedMemory* memory_target = memory;
    SharedEventEmitter* events_target = events;
    if (flags & task_memory_url) memory_target = opened<SharedMemory>(reader.sized());
    if (flags & task_events_url) events_target = opened<SharedEventEmitter>(reader.sized());
    if (((flags & task_has_memory) && !memory_target) || ((flags & task_has_events) && !events_target))
      throw Error("scale: this worker cannot reach an in-process SharedMemory or SharedEventEmitter; create them "
                  "with an http:// or redis:// URL");
    TaskInput input;
    input.count = static_cast<std::size_t>(reader.u64());
    input.extra = reader.sized();
    input.items = reader.rest();
    input.memory = (flags & task_has_memory) ? memory_target : nullptr;
    input.events = (flags & task_has_events) ? events_target : nullptr;
    input.control = control;
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

LostChunk on_lost_chunk(const Chunk& chunk, unsigned& attempts, unsigned max_retries, const std::string& status,
                        const CrashReport* capsule) {
  if (chunk.size() > 1 && chunk.job->splittable() && max_retries > 0) {
    attempts = 0;
    return LostChunk{LostChunk::Kind::split, chunk.begin + chunk.size() / 2, nullptr};
  }
  ++attempts;
  if (attempts > max_retries)
    return LostChunk{LostChunk::Kind::give_up, 0,
                     std::make_exception_ptr(WorkerLost(chunk.begin, status, static_cast<int>(attempts),
                                                        capsule ? std::optional<CrashReport>(*capsule) : std::nullopt))};
  return LostChunk{LostChunk::Kind::retry, 0, nullptr};
}

}  // namespace scale::detail
