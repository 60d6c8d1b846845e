#pragma once
/// \file scale::Scope: the shared state a worker function sees.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <scale/detail/chunk_control.hpp>
#include <scale/error.hpp>
#include <scale/future.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>

namespace scale {

namespace detail {
template <class T, class F, class Derived>
class ItemJob;
void log_error(std::string_view message) noexcept;

inline std::exception_ptr no_shared_state_error() {
  return std::make_exception_ptr(
      Error("this function uses scale::Scope but the Iterator has no shared state: call "
            "iterator.use_scope(memory) (or use_scope(memory, events)) before map/filter/reduce/for_each"));
}
}  // namespace detail

/// What a worker function sees: whether its call was asked to stop, a way to report how far the
/// running item has got, and the SharedMemory (and SharedEventEmitter) given to
/// Iterator::use_scope, with the same calls and semantics as SharedMemory wherever the function
/// runs. stop_requested() and progress() need no use_scope; without the state a memory or emit
/// call needs, that call fails (a failed Future) with a scale::Error that says to call use_scope.
class Scope {
 public:
  using Revision = SharedMemory::Revision;
  using Entry = SharedMemory::Entry;

  Scope(SharedMemory* memory, SharedEventEmitter* events, detail::ChunkControl* control = nullptr) noexcept
      : m_memory(memory), m_events(events), m_control(control) {}

  bool has_memory() const noexcept { return m_memory != nullptr; }
  bool has_events() const noexcept { return m_events != nullptr; }

  /// True once the call was asked to stop (RunOptions::stop, Ctrl-C), on every tier: the request
  /// travels to worker processes and cluster workers. Return early when it is.
  bool stop_requested() const noexcept { return m_control != nullptr && m_control->stop_requested(); }

  /// How far the running item has got, from 0 to 1 (RunOptions::on_progress counts it). Cheap
  /// enough to call in a tight loop: one store; remote workers send at most one message per running
  /// chunk every 50 ms. A value outside
  /// [0, 1] or NaN is clamped (NaN to 0) and logged to stderr once per call; it never throws.
  void progress(double fraction) const noexcept {
    if (m_control == nullptr) return;
    if (!(fraction >= 0.0 && fraction <= 1.0)) [[unlikely]]
      fraction = clamp_bad_progress(fraction);
    m_control->set_fraction(fraction);
  }

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
  /// A value outside [0, 1] or NaN: clamped (NaN to 0), and logged once per call.
  [[gnu::cold]] double clamp_bad_progress(double fraction) const noexcept {
    if (m_control->first_bad_progress())
      detail::log_error("scope.progress(" + std::to_string(fraction) + ") is outside [0, 1]; clamped (logged once per call)");
    return std::isnan(fraction) ? 0.0 : (fraction < 0.0 ? 0.0 : 1.0);
  }

  SharedMemory* m_memory;
  SharedEventEmitter* m_events;
  detail::ChunkControl* m_control;
};

}  // namespace scale
