#pragma once
/// \file scale::Scope: the shared state a worker function sees.

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <scale/error.hpp>
#include <scale/future.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>

namespace scale {

namespace detail {
inline std::exception_ptr no_shared_state_error() {
  return std::make_exception_ptr(
      Error("this function uses scale::Scope but the Iterator has no shared state: call "
            "iterator.use_scope(memory) (or use_scope(memory, events)) before map/filter/reduce/for_each"));
}
}  // namespace detail

/// The SharedMemory (and SharedEventEmitter) given to Iterator::use_scope, as a worker function
/// sees it. The same calls and semantics as SharedMemory wherever the function runs. Holds both by
/// pointer (they must outlive it); usable from many threads at once. Without the state a call
/// needs, the call fails (a failed Future) with a scale::Error that says to call use_scope.
class Scope {
 public:
  using Revision = SharedMemory::Revision;
  using Entry = SharedMemory::Entry;

  Scope(SharedMemory* memory, SharedEventEmitter* events) noexcept : m_memory(memory), m_events(events) {}

  bool has_memory() const noexcept { return m_memory != nullptr; }
  bool has_events() const noexcept { return m_events != nullptr; }

  /// See SharedMemory::get.
  template <class T>
  Future<T> get(std::string key) const {
    if (!m_memory) return make_failed_future<T>(detail::no_shared_state_error());
    return m_memory->get<T>(std::move(key));
  }
  /// See SharedMemory::entry.
  Future<std::optional<Entry>> entry(std::string key) const {
    if (!m_memory) return make_failed_future<std::optional<Entry>>(detail::no_shared_state_error());
    return m_memory->entry(std::move(key));
  }
  /// See SharedMemory::set(object).
  Future<Revision> set(nlohmann::json object) const {
    if (!m_memory) return make_failed_future<Revision>(detail::no_shared_state_error());
    return m_memory->set(std::move(object));
  }
  /// See SharedMemory::set(key, value).
  template <class T>
  Future<Revision> set(std::string key, T value) const {
    if (!m_memory) return make_failed_future<Revision>(detail::no_shared_state_error());
    return m_memory->set(std::move(key), std::move(value));
  }
  /// See SharedMemory::set(key, json).
  Future<Revision> set(std::string key, nlohmann::json value) const {
    if (!m_memory) return make_failed_future<Revision>(detail::no_shared_state_error());
    return m_memory->set(std::move(key), std::move(value));
  }
  /// See SharedMemory::compare_and_set.
  template <class T>
  Future<bool> compare_and_set(std::string key, Revision expected_revision, T value) const {
    if (!m_memory) return make_failed_future<bool>(detail::no_shared_state_error());
    return m_memory->compare_and_set(std::move(key), expected_revision, std::move(value));
  }
  /// See SharedMemory::compare_and_set with a JSON value.
  Future<bool> compare_and_set(std::string key, Revision expected_revision, nlohmann::json value) const {
    if (!m_memory) return make_failed_future<bool>(detail::no_shared_state_error());
    return m_memory->compare_and_set(std::move(key), expected_revision, std::move(value));
  }
  /// See SharedMemory::increment.
  Future<std::int64_t> increment(std::string key, std::int64_t by = 1) const {
    if (!m_memory) return make_failed_future<std::int64_t>(detail::no_shared_state_error());
    return m_memory->increment(std::move(key), by);
  }
  /// See SharedMemory::erase.
  Future<bool> erase(std::string key) const {
    if (!m_memory) return make_failed_future<bool>(detail::no_shared_state_error());
    return m_memory->erase(std::move(key));
  }
  /// See SharedMemory::list.
  Future<std::vector<Entry>> list(std::string prefix = "") const {
    if (!m_memory) return make_failed_future<std::vector<Entry>>(detail::no_shared_state_error());
    return m_memory->list(std::move(prefix));
  }
  /// See SharedEventEmitter::emit; needs use_scope(memory, events).
  Future<void> emit(std::string event, nlohmann::json payload = nullptr) const {
    if (!m_events) return make_failed_future<void>(detail::no_shared_state_error());
    return m_events->emit(std::move(event), std::move(payload));
  }

 private:
  SharedMemory* m_memory;
  SharedEventEmitter* m_events;
};

}  // namespace scale
