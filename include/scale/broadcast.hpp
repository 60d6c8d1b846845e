#pragma once
/// \file ScalabilityManager::broadcast and ::on_every_worker: run a function on every worker.
//
// Both are written once over the manager interface:
//   - broadcast asks the manager for its live workers (broadcast_targets) and submits one
//     one-item chunk pinned to each (Chunk::worker), each of its own Job, so that one worker's
//     exception becomes that worker's reply instead of cancelling the others.
//   - on_every_worker wraps `fn(Scope&)` as a one-item for_each Job and hands it to the manager
//     (add_setup), which runs it on each worker before that worker's first chunk. The wrapper
//     derives from the function's type, so a captureless lambda stays shippable.

#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <scale/detail/loop.hpp>
#include <scale/error.hpp>
#include <scale/future.hpp>
#include <scale/iterator.hpp>
#include <scale/scalability_manager.hpp>
#include <scale/worker_result.hpp>

namespace scale {

namespace detail {

/// A setup function `fn(Scope&)` as the function of a one-item for_each over `int`.
template <class F>
struct SetupCall : F {
  SetupCall() = default;
  explicit SetupCall(F fn) : F(std::move(fn)) {}
  decltype(auto) operator()(const int&, Scope& scope) const { return static_cast<const F&>(*this)(scope); }
};

template <class R, class Job, class V, class F>
Future<std::vector<WorkerReply<R>>> run_broadcast(ScalabilityManager* manager, std::shared_ptr<const std::vector<V>> item,
                                                  F fn, SharedMemory* memory, SharedEventEmitter* events) {
  co_await ResumeOnLoop{};
  Future<std::vector<std::string>> targets_known = manager->broadcast_targets();
  std::vector<std::string> targets = co_await std::move(targets_known);
  if (targets.empty())
    throw NoWorkers("scale: broadcast found no live worker on this manager: give it workers (resize, or start "
                    "cluster workers) before broadcasting");
  std::vector<std::shared_ptr<Job>> jobs;
  std::vector<Future<void>> ran;
  jobs.reserve(targets.size());
  ran.reserve(targets.size());
  for (const std::string& worker : targets) {
    auto job = std::make_shared<Job>(item, fn, memory, events, TaskPolicy{});
    Chunk chunk{job, 0, 1, {}, worker};
    ran.push_back(manager->submit(std::move(chunk)));
    jobs.push_back(std::move(job));
  }
  std::vector<WorkerReply<R>> replies(targets.size());
  for (std::size_t k = 0; k < targets.size(); ++k) {
    replies[k].worker = targets[k];
    try {
      Future<void> one = std::move(ran[k]);
      co_await std::move(one);
      if constexpr (!std::is_void_v<R>) replies[k].value.emplace(std::move(jobs[k]->take().front()));
    } catch (...) {
      replies[k].error = std::current_exception();
    }
  }
  co_return replies;
}

}  // namespace detail

template <class F, class V>
auto ScalabilityManager::broadcast(F fn, V value, SharedMemory* memory, SharedEventEmitter* events) {
  using Call = detail::FnCall<F, const V&>;
  static_assert(Call::callable, "scale::ScalabilityManager::broadcast(fn, value): fn must be callable as R(V), "
                                "R(V, scale::Scope&), scale::Future<R>(V) or scale::Future<R>(V, scale::Scope&)");
  using R = typename Call::result;
  using Job = std::conditional_t<std::is_void_v<R>, detail::ForEachJob<V, F>, detail::MapJob<V, F>>;
  auto item = std::make_shared<const std::vector<V>>(1, std::move(value));
  return detail::run_broadcast<R, Job>(this, std::move(item), std::move(fn), memory, events);
}

template <class F>
void ScalabilityManager::on_every_worker(F fn, SharedMemory* memory, SharedEventEmitter* events) {
  static_assert(std::is_class_v<F>, "scale::ScalabilityManager::on_every_worker(fn): fn must be a function object "
                                    "(a lambda, or scale::fn<&f>) callable as fn(scale::Scope&)");
  static_assert(std::is_invocable_v<const F&, Scope&>,
                "scale::ScalabilityManager::on_every_worker(fn): fn must be callable as fn(scale::Scope&)");
  using Call = detail::SetupCall<F>;
  auto item = std::make_shared<const std::vector<int>>(1, 0);
  add_setup(std::make_shared<detail::ForEachJob<int, Call>>(std::move(item), Call(std::move(fn)), memory, events,
                                                            detail::TaskPolicy{}));
}

}  // namespace scale
