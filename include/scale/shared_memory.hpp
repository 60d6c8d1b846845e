#pragma once
/// \file scale::SharedMemory: versioned key/value state shared by threads, processes and servers.

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <scale/detail/memory_backend.hpp>
#include <scale/error.hpp>
#include <scale/future.hpp>
#include <scale/subscription.hpp>

namespace scale {

namespace detail {

/// "an integer (300)", "a string", ... for error messages.
std::string describe_json(const nlohmann::json& value);
/// A readable name for a C++ type (demangled where the compiler allows).
std::string type_name(const std::type_info& type);
/// The backend for a URL; throws scale::Error for a scheme this build does not support.
std::shared_ptr<MemoryBackend> make_memory_backend(const std::string& url);

/// SharedMemory's compare_and_set from the backend's answer: true when a revision was written.
/// Completes on the thread that completes `revision`, as the backend's Future would.
Future<bool> written(Future<Revision> revision);
/// SharedMemory's increment from the backend's answer: the sum alone (same thread as above).
Future<std::int64_t> sum_of(Future<Incremented> incremented);

struct MemoryAccess;

/// What a watch from a negative revision fails with (every backend alike: SharedMemory checks).
inline std::exception_ptr negative_revision_error(Revision from) {
  return std::make_exception_ptr(Error("scale::SharedMemory::watch: from_revision " + std::to_string(from) +
                                       " is negative; pass 0 for changes from now on, or a revision to replay from"));
}

template <class T>
std::string requested_name() {
  if constexpr (std::is_same_v<T, std::string>)
    return "std::string";
  else
    return type_name(typeid(T));
}

/// Whether `value` (a JSON number) converts to the arithmetic type T with no loss.
template <class T>
bool number_fits(const nlohmann::json& value, T& out) {
  if constexpr (std::is_floating_point_v<T>) {
    if (value.is_number_float()) {
      double d = value.get<double>();
      out = static_cast<T>(d);
      return std::isnan(d) || static_cast<double>(out) == d;
    }
    if (value.is_number_unsigned()) {
      auto u = value.get<std::uint64_t>();
      out = static_cast<T>(u);
      // NOTE: 2^64 is representable as a float but not as a uint64_t: compare in the float domain.
      return out < static_cast<T>(18446744073709551616.0) && static_cast<std::uint64_t>(out) == u;
    }
    auto i = value.get<std::int64_t>();
    out = static_cast<T>(i);
    return out >= static_cast<T>(-9223372036854775808.0) && out < static_cast<T>(9223372036854775808.0) &&
           static_cast<std::int64_t>(out) == i;
  } else {
    if (value.is_number_unsigned()) {
      auto u = value.get<std::uint64_t>();
      if (!std::in_range<T>(u)) return false;
      out = static_cast<T>(u);
      return true;
    }
    if (value.is_number_integer()) {
      auto i = value.get<std::int64_t>();
      if (!std::in_range<T>(i)) return false;
      out = static_cast<T>(i);
      return true;
    }
    double d = value.get<double>();
    if (!std::isfinite(d) || std::trunc(d) != d) return false;
    // Both bounds are powers of two, so they are exact doubles; the upper one is exclusive.
    constexpr double low = static_cast<double>(std::numeric_limits<T>::min());
    constexpr double high = 2.0 * static_cast<double>(std::numeric_limits<T>::max() / 2 + 1);
    if (d < low || d >= high) return false;
    out = static_cast<T>(d);
    return true;
  }
}

/// Reads `value` as T, or throws scale::TypeMismatch naming the key and both types.
template <class T>
T json_as(const std::string& key, const nlohmann::json& value) {
  auto mismatch = [&] { return TypeMismatch(key, describe_json(value), requested_name<T>()); };
  if constexpr (std::is_same_v<T, nlohmann::json>) {
    return value;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!value.is_boolean()) throw mismatch();
    return value.get<bool>();
  } else if constexpr (std::is_arithmetic_v<T>) {
    if (!value.is_number()) throw mismatch();
    T out{};
    if (!number_fits<T>(value, out)) throw mismatch();
    return out;
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!value.is_string()) throw mismatch();
    return value.get<std::string>();
  } else {
    try {
      return value.get<T>();
    } catch (const nlohmann::json::exception&) {
      throw mismatch();
    }
  }
}

template <class T>
Future<T> get_as(Future<std::optional<Entry>> entry, std::string key) {
  std::optional<Entry> found = co_await std::move(entry);
  if (!found) throw KeyNotFound(std::move(key));
  co_return json_as<T>(key, found->value);
}

}  // namespace detail

/// Versioned key/value state: in-process by default, or on a store named by URL. A cheap,
/// copyable handle; copies share the same store. Every call may be made from any thread.
class SharedMemory {
 public:
  using Revision = scale::Revision;
  using Entry = scale::Entry;
  using Change = scale::Change;
  using Options = detail::InProcessMemoryOptions;
  using Handler = std::function<void(const Change&)>;

  /// A store in this process, keeping the last 10,000 changes for watches.
  SharedMemory() : SharedMemory(Options{}) {}
  /// A store in this process, e.g. `SharedMemory(SharedMemory::Options{.history = 100})`.
  explicit SharedMemory(Options options) : m_backend(detail::make_in_process_memory(options)) {}
  /// The store at `url` ("http://host:port", "redis://host:port"); throws scale::Error for a
  /// scheme this build does not support.
  explicit SharedMemory(std::string url) : m_backend(detail::make_memory_backend(url)), m_url(std::move(url)) {}
  /// Over a given backend (for backend implementers).
  explicit SharedMemory(std::shared_ptr<detail::MemoryBackend> backend) noexcept : m_backend(std::move(backend)) {}

  /// The URL this memory was opened with; empty for one in this process (or over a given backend).
  /// A process-pool worker opens the same URL itself rather than asking its parent.
  const std::string& url() const noexcept { return m_url; }

  /// Writes every key of `object` in one atomic step with one revision, which it returns.
  /// Under GCC 12 build the object first: `json o = {{"k", 1}}; co_await memory.set(o);`.
  Future<Revision> set(nlohmann::json object) const {
    if (!object.is_object())
      return make_failed_future<Revision>(std::make_exception_ptr(
          Error("scale::SharedMemory::set(object) needs a JSON object of key/value pairs, got " +
                detail::describe_json(object) + "; use set(key, value) to store one value")));
    return m_backend->set_many(std::move(object));
  }

  /// Writes one key; returns its new revision. `value` converts to JSON (to_json for user types).
  template <class T>
  Future<Revision> set(std::string key, T value) const {
    nlohmann::json object = nlohmann::json::object();
    try {
      object[std::move(key)] = nlohmann::json(std::move(value));
    } catch (...) {
      return make_failed_future<Revision>(std::current_exception());
    }
    return m_backend->set_many(std::move(object));
  }

  /// Writes one key from a JSON value, e.g. `set("k", {1, 2, 3})` (a braced list has no type for T).
  Future<Revision> set(std::string key, nlohmann::json value) const {
    nlohmann::json object = nlohmann::json::object();
    object[std::move(key)] = std::move(value);
    return m_backend->set_many(std::move(object));
  }

  /// The key's value as T. Fails with scale::KeyNotFound, or scale::TypeMismatch when the stored
  /// value is another JSON type or a number T cannot hold exactly.
  template <class T>
  Future<T> get(std::string key) const {
    return detail::get_as<T>(m_backend->entry(key), key);
  }

  /// The key's value, revision and timestamp, or nullopt when absent.
  Future<std::optional<Entry>> entry(std::string key) const { return m_backend->entry(std::move(key)); }

  /// Removes the key; true when it was there.
  Future<bool> erase(std::string key) const { return m_backend->erase(std::move(key)); }

  /// Writes `value` only when the key's revision is `expected_revision` (0: only when absent).
  template <class T>
  Future<bool> compare_and_set(std::string key, Revision expected_revision, T value) const {
    nlohmann::json json;
    try {
      json = nlohmann::json(std::move(value));
    } catch (...) {
      return make_failed_future<bool>(std::current_exception());
    }
    return compare_and_set(std::move(key), expected_revision, std::move(json));
  }

  /// compare_and_set with a JSON value, e.g. a braced list.
  Future<bool> compare_and_set(std::string key, Revision expected_revision, nlohmann::json value) const {
    return detail::written(m_backend->compare_and_set_revision(std::move(key), expected_revision, std::move(value)));
  }

  /// Adds `by` to the key's integer value (a missing key counts from 0); returns the new value.
  Future<std::int64_t> increment(std::string key, std::int64_t by = 1) const {
    return detail::sum_of(m_backend->increment_with_revision(std::move(key), by));
  }

  /// Every entry whose key starts with `prefix`, sorted by key.
  Future<std::vector<Entry>> list(std::string prefix = "") const { return m_backend->list(std::move(prefix)); }

  /// Calls `handler` on the loop with every change to keys starting with `prefix` whose revision
  /// is >= `from_revision`, in order, none missed or repeated (0: changes from now on). A
  /// `from_revision` older than the kept history never calls the handler: the Subscription's
  /// ready() fails with scale::Compacted. The handler never runs inside watch() itself.
  Subscription watch(std::string prefix, Handler handler, Revision from_revision = 0) const {
    auto queue = std::make_shared<detail::SubscriptionQueue<Change>>(std::move(handler));
    if (from_revision < 0)
      queue->set_error(detail::negative_revision_error(from_revision));
    else
      m_backend->watch(std::move(prefix), from_revision, queue);
    return Subscription(std::move(queue));
  }

 private:
  friend struct detail::MemoryAccess;
  std::shared_ptr<detail::MemoryBackend> m_backend;
  std::string m_url;
};

namespace detail {

/// What library code may reach that users may not: the backend under a SharedMemory, for the
/// forms that also answer revisions (a process-pool parent answering its workers' scope calls).
struct MemoryAccess {
  static MemoryBackend& backend(const SharedMemory& memory) noexcept { return *memory.m_backend; }
};

}  // namespace detail

}  // namespace scale
