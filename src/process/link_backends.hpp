#pragma once
// The Scope backends of a process-pool worker: a SharedMemory and a SharedEventEmitter whose
// every call is a scope_request on the worker's link, answered by the parent's real memory and
// emitter (process/scope_server.hpp). Watching and subscribing stay in the parent: both fail with
// a scale::Error that says so.

#include <memory>

#include <scale/detail/event_backend.hpp>
#include <scale/detail/memory_backend.hpp>

namespace scale::detail {

class WorkerLink;

/// The memory and emitter a worker's Scope reaches through `link` (which outlives them).
std::shared_ptr<MemoryBackend> make_link_memory(WorkerLink& link);
std::shared_ptr<EventBackend> make_link_events(WorkerLink& link);

}  // namespace scale::detail
