// The TaskRegistry of <scale/detail/task_registry.hpp>: the Job types of this executable by the
// name every process of it gives them, filled during static initialization.

#include <scale/detail/task_registry.hpp>

#include <dlfcn.h>

#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <set>

namespace scale::detail {

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

std::vector<std::string> registered_task_names() {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> names;
  names.reserve(r.tasks.size());
  for (auto& [name, entry] : r.tasks) names.push_back(name);
  return names;
}

}  // namespace scale::detail
