#pragma once
// The TaskRegistry: every algorithm Job type that can run in another process, by a name that is
// the same in every process of this executable.
//
// Registration needs no user code. Each Job type (algorithm × function type × value types) has a
// TaskRegistration<Job>::name, a static data member whose initializer registers the Job's
// invoker; the Job's task_name() odr-uses it, and task_name() is a virtual function of a Job the
// algorithm constructs, so every Job type that reaches map/filter/reduce/for_each anywhere in the
// program is registered during static initialization, before main, in the parent and in every
// worker alike.
//
// The name is the Job's mangled type name plus the offset of that static member from the base of
// the image that holds it (dladdr). The type name alone is not unique (Clang names namespace-scope
// lambdas $_0 in every translation unit); the offset is, and it is the same in every process that
// runs the same executable, whatever address the loader chose. A second registration of a name
// with another invoker marks the name ambiguous: running it fails with a scale::Error instead of
// running the wrong function.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include <scale/detail/chunk_control.hpp>
#include <scale/detail/wire.hpp>
#include <scale/error.hpp>

namespace scale {

class SharedMemory;
class SharedEventEmitter;

namespace detail {

/// What a worker hands an invoker: the encoded items of one chunk and the Scope's targets.
struct TaskInput {
  std::string_view extra;  ///< per-call bytes (reduce's init)
  std::string_view items;  ///< encode_values of `count` items
  std::size_t count = 0;
  SharedMemory* memory = nullptr;
  SharedEventEmitter* events = nullptr;
  /// The worker's control of this task: its stop flag, where its progress goes, the crash
  /// handler's item index (chunk_control.hpp). Null: the Job runs as on the thread tiers.
  ChunkControl* control = nullptr;
};

/// Decodes the items, runs the Job's per-item kernel over them, appends the encoded results to
/// `out`; throws what the function threw.
using TaskInvoker = void (*)(const TaskInput& input, std::string& out);

/// A registered task: its invoker, and whether its function takes a Scope (only then can it make
/// calls that the worker's link must answer while it runs).
struct TaskEntry {
  TaskInvoker invoke = nullptr;
  bool uses_scope = true;
};

/// Registers `entry` under `type` plus the image offset of `anchor`; returns the name.
std::string register_task(const char* type, const void* anchor, TaskEntry entry);
/// The entry of a registered name; throws scale::Error for an unknown or ambiguous name.
TaskEntry find_task(std::string_view name);
/// Every registered name, sorted (what the build fingerprint hashes).
std::vector<std::string> registered_task_names();

template <class JobType>
struct TaskRegistration {
  static std::string make() {
    if constexpr (JobType::shippable)
      return register_task(typeid(JobType).name(), &name, TaskEntry{&JobType::invoke_remote, JobType::uses_scope});
    else
      return std::string();
  }
  static inline const std::string name = make();
};

/// A function object a worker can default-construct: a captureless lambda, scale::fn<&f>, or a
/// class without data members.
template <class F>
inline constexpr bool is_shippable_function_v =
    std::is_class_v<F>&& std::is_empty_v<F>&& std::is_default_constructible_v<F>;

template <class V>
void add_value_problem(std::string& problem) {
  if constexpr (!is_wire_serializable_v<V>)
    if (problem.empty()) problem = wire_type_error_message(type_name<V>());
}

/// Why a Job over function F and value types Values... cannot run in another process, or "".
template <class F, class... Values>
std::string remote_problem_of() {
  std::string problem;
  if constexpr (std::is_pointer_v<F> || std::is_member_pointer_v<F> || std::is_function_v<F>) {
    problem = "scale: a function pointer cannot be sent to another process (its address means nothing "
              "there): pass a plain function as scale::fn<&function_name>, or use a lambda that captures "
              "nothing";
  } else if constexpr (!is_shippable_function_v<F>) {
    problem = "scale: the function '" + type_name<F>() +
              "' has state (a lambda with captures, or an object with data members), which cannot be sent to "
              "another process: capture nothing and pass state through the scope "
              "(iterator.use_scope(memory), then scope.get/set inside the function), or use InlineManager or "
              "ThreadPoolManager, which accept any function";
  } else {
    (add_value_problem<Values>(problem), ...);
  }
  return problem;
}

/// encode_values over a whole vector (std::vector<bool> included, which has no data()).
template <class V>
void encode_vector(const std::vector<V>& values, std::string& out) {
  if constexpr (std::is_same_v<V, bool>) {
    std::unique_ptr<bool[]> flat(new bool[values.size()]);
    for (std::size_t i = 0; i < values.size(); ++i) flat[i] = values[i];
    encode_values(flat.get(), values.size(), out);
  } else {
    encode_values(values.data(), values.size(), out);
  }
}

}  // namespace detail
}  // namespace scale
