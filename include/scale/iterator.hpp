#pragma once
/// \file scale::Iterator<T>: map, filter, reduce and for_each over items, run by a ScalabilityManager.

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <functional>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <scale/detail/dispatch.hpp>
#include <scale/detail/job.hpp>
#include <scale/detail/key_groups.hpp>
#include <scale/detail/task_registry.hpp>
#include <scale/detail/wire.hpp>
#include <scale/future.hpp>
#include <scale/run_options.hpp>
#include <scale/scalability_manager.hpp>
#include <scale/scope.hpp>
#include <scale/worker_result.hpp>

namespace scale {

namespace detail {

/// How a user function is called with `Args...`: without a Scope when it can be, else with one.
template <class F, class... Args>
struct FnCall {
  static constexpr bool plain = std::is_invocable_v<const F&, Args...>;
  static constexpr bool with_scope = !plain && std::is_invocable_v<const F&, Args..., Scope&>;
  static constexpr bool callable = plain || with_scope;

  static auto deduce() {
    if constexpr (plain)
      return std::type_identity<std::invoke_result_t<const F&, Args...>>{};
    else if constexpr (with_scope)
      return std::type_identity<std::invoke_result_t<const F&, Args..., Scope&>>{};
    else
      return std::type_identity<void>{};
  }
  using raw = typename decltype(deduce())::type;
  static constexpr bool async = is_future_v<raw>;
  using result = unwrap_t<raw>;

  template <class... CallArgs>
  static decltype(auto) call(const F& fn, Scope* scope, CallArgs&&... args) {
    if constexpr (with_scope)
      return fn(std::forward<CallArgs>(args)..., *scope);
    else
      return fn(std::forward<CallArgs>(args)...);
  }
};

/// A plain value as is; a Future waited for on this (non-loop) thread.
template <class V>
decltype(auto) wait_value(V&& value) {
  if constexpr (is_future_v<V>)
    return std::forward<V>(value).get();
  else
    return std::forward<V>(value);
}

/// Results written by item index from many threads at once. Each slot is its own object (never
/// std::vector<bool>'s shared bits); types that cannot be default-constructed and assigned in
/// place are held in std::optional and moved out at the end.
template <class R>
class ResultSlots {
  static constexpr bool direct = std::is_default_constructible_v<R> && std::is_move_assignable_v<R> &&
                                 !std::is_same_v<R, bool>;
  using Slot = std::conditional_t<direct, R, std::optional<R>>;

 public:
  explicit ResultSlots(std::size_t size) : m_slots(size) {}

  template <class V>
  void put(std::size_t index, V&& value) {
    if constexpr (direct)
      m_slots[index] = std::forward<V>(value);
    else
      m_slots[index].emplace(std::forward<V>(value));
  }

  std::vector<R> take() {
    if constexpr (direct) {
      return std::move(m_slots);
    } else {
      std::vector<R> values;
      values.reserve(m_slots.size());
      for (auto& slot : m_slots) values.push_back(std::move(*slot));
      return values;
    }
  }

 private:
  std::vector<Slot> m_slots;
};

/// The state every algorithm's job shares (the items, the function and the scope's targets) and
/// the one per-item loop that runs them, blocking (run) and as a coroutine (run_async). Each
/// algorithm's Job (`Derived`) states only what an item is:
///   store(i, state, result)    keeps the result (store(i, state) when there is none)
/// and, where it differs from the default of fn(item) with no per-chunk state (reduce):
///   call(scope, i, state)      calls the user function on item i (a Future it returns is waited
///                              for, or co_awaited on the loop)
///   start() / finish(begin, state)  the per-chunk state and what becomes of it
/// Calls go to Derived directly (no virtual call): a plain function over ints stays a tight loop.
template <class T, class F, class Derived>
class ItemJob : public Job {
 public:
  ItemJob(std::shared_ptr<const std::vector<T>> items, F fn, SharedMemory* memory, SharedEventEmitter* events,
          TaskPolicy policy)
      : Job(items->size(), std::move(policy)),
        m_items(std::move(items)),
        m_fn(std::move(fn)),
        m_memory(memory),
        m_events(events) {}

  SharedMemory* scope_memory() const noexcept override { return m_memory; }
  SharedEventEmitter* scope_events() const noexcept override { return m_events; }

  /// In a worker process: the link's control for this task (stop frames, progress frames, the
  /// crash handler's item index). Unset on the thread tiers, where the Job is its own control.
  void set_control(ChunkControl* control) noexcept { m_control = control; }

  void run(std::size_t begin, std::size_t end) override {
    Derived& self = static_cast<Derived&>(*this);
    if (m_control != nullptr) {
      run_items<true>(self, begin, end, m_control);
    } else if constexpr (Derived::uses_scope) {
      JobChunkControl local(*this);
      run_items<true>(self, begin, end, &local);
    } else {
      run_items<false>(self, begin, end, nullptr);
    }
  }

  Future<void> run_async(std::size_t begin, std::size_t end) override {
    Derived& self = static_cast<Derived&>(*this);
    // Only a function that takes Scope& can look at the control (one lock per chunk).
    std::optional<JobChunkControl> local;
    if constexpr (Derived::uses_scope) local.emplace(*this);
    Scope scope(m_memory, m_events, local ? &*local : nullptr);
    auto state = self.start();
    for (std::size_t i = begin; i < end; ++i) {
      if constexpr (Derived::uses_scope) {
        if (local->stop_requested()) throw Cancelled(cancelled_message());
        local->set_item(i - begin);
      }
      using Raw = decltype(self.call(scope, i, state));
      if constexpr (is_future_v<Raw>) {
        auto pending = self.call(scope, i, state);  // named: see the NOTE in dispatch.hpp
        if constexpr (std::is_void_v<unwrap_t<Raw>>) {
          co_await std::move(pending);
          self.store(i, state);
        } else {
          self.store(i, state, co_await std::move(pending));
        }
      } else if constexpr (std::is_void_v<Raw>) {
        self.call(scope, i, state);
        self.store(i, state);
      } else {
        self.store(i, state, self.call(scope, i, state));
      }
    }
    self.finish(begin, std::move(state));
  }

  std::string item_text(std::size_t index) const override {
    return index < m_items->size() ? item_json_text((*m_items)[index]) : std::string();
  }

  /// The remote path: the chunk's items, encoded.
  void encode_items(std::size_t begin, std::size_t end, std::string& out) const override {
    encode_values(m_items->data() + begin, end - begin, out);
  }

 protected:
  /// The function of map, filter and for_each: fn(item) (or fn(item, scope)), with no per-chunk
  /// state; reduce states its own.
  using ItemCall = FnCall<F, const T&>;
  struct NoState {};
  NoState start() const noexcept { return {}; }
  decltype(auto) call(Scope& scope, std::size_t i, NoState&) const { return ItemCall::call(m_fn, &scope, item(i)); }
  void finish(std::size_t, NoState&&) const noexcept {}

  Scope scope() const noexcept { return Scope(m_memory, m_events); }
  const T& item(std::size_t i) const noexcept { return (*m_items)[i]; }

  std::shared_ptr<const std::vector<T>> m_items;
  F m_fn;
  SharedMemory* m_memory;
  SharedEventEmitter* m_events;

 private:
  /// The per-item loop. Tracked (a function that takes Scope&, or any chunk in a worker process):
  /// the running item's index is kept for Scope::progress and the crash handler, and a stop
  /// request ends the chunk between items. Untracked: today's tight loop, nothing per item.
  template <bool Tracked>
  void run_items(Derived& self, std::size_t begin, std::size_t end, ChunkControl* control) {
    Scope scope(m_memory, m_events, control);
    if constexpr (Tracked) control->started();
    struct Ended {
      ChunkControl* control;
      ~Ended() {
        if (control != nullptr) control->ended();
      }
    } ended{Tracked ? control : nullptr};
    auto state = self.start();
    for (std::size_t i = begin; i < end; ++i) {
      if constexpr (Tracked) {
        if (control->stop_requested()) throw Cancelled(cancelled_message());
        control->set_item(i - begin);
      }
      using Raw = decltype(self.call(scope, i, state));
      if constexpr (std::is_void_v<Raw>) {
        self.call(scope, i, state);
        self.store(i, state);
      } else if constexpr (is_future_v<Raw> && std::is_void_v<unwrap_t<Raw>>) {
        self.call(scope, i, state).get();
        self.store(i, state);
      } else {
        self.store(i, state, wait_value(self.call(scope, i, state)));
      }
    }
    self.finish(begin, std::move(state));
  }

  ChunkControl* m_control = nullptr;
};

template <class T, class F>
class MapJob final : public ItemJob<T, F, MapJob<T, F>> {
  using Base = ItemJob<T, F, MapJob<T, F>>;
  using Call = typename Base::ItemCall;
  friend Base;

 public:
  using Result = typename Call::result;
  using Base::Base;

  bool is_async() const noexcept override { return Call::async; }

  std::vector<Result> take() { return m_out.take(); }

  /// map_with_workers: from now on the Job keeps the worker of each item (ran_on).
  void track_workers() { m_workers.resize(this->size()); }
  void ran_on(std::size_t begin, std::size_t end, std::string_view worker) override {
    if (m_workers.empty()) return;
    for (std::size_t i = begin; i < end; ++i) m_workers[i].assign(worker);
  }
  std::vector<std::string> take_workers() { return std::move(m_workers); }

  static constexpr bool uses_scope = Call::with_scope;
  static constexpr bool shippable = is_shippable_function_v<F> && is_wire_serializable_v<T> &&
                                    is_wire_serializable_v<Result>;
  std::string remote_problem() const override { return remote_problem_of<F, T, Result>(); }
  const std::string& task_name() const override { return TaskRegistration<MapJob>::name; }
  void accept_results(std::size_t begin, std::size_t end, std::string_view bytes) override {
    if constexpr (is_wire_serializable_v<Result>) {
      auto values = decode_values<Result>(bytes, end - begin);
      for (std::size_t i = 0; i < values.size(); ++i) {
        if constexpr (std::is_same_v<Result, bool>)
          m_out.put(begin + i, static_cast<bool>(values[i]));
        else
          m_out.put(begin + i, std::move(values[i]));
      }
    } else {
      throw NotShippable(remote_problem());
    }
  }
  /// In a worker: the same kernel (run) over decoded items.
  static void invoke_remote(const TaskInput& input, std::string& out) {
    auto items = std::make_shared<const std::vector<T>>(decode_values<T>(input.items, input.count));
    MapJob job(std::move(items), F{}, input.memory, input.events, TaskPolicy{});
    job.set_control(input.control);
    job.run(0, input.count);
    encode_vector(job.take(), out);
  }

 private:
  template <class V>
  void store(std::size_t i, typename Base::NoState&, V&& result) {
    m_out.put(i, std::forward<V>(result));
  }

  ResultSlots<Result> m_out{this->size()};
  std::vector<std::string> m_workers;  // map_with_workers only; chunks write disjoint ranges
};

template <class T, class F>
class FilterJob final : public ItemJob<T, F, FilterJob<T, F>> {
  using Base = ItemJob<T, F, FilterJob<T, F>>;
  using Call = typename Base::ItemCall;
  friend Base;

 public:
  using Base::Base;

  bool is_async() const noexcept override { return Call::async; }

  std::vector<T> take() const {
    const std::vector<T>& items = *this->m_items;
    std::vector<T> kept;
    for (std::size_t i = 0; i < items.size(); ++i)
      if (m_keep[i]) kept.push_back(items[i]);
    return kept;
  }
  /// A keyed call's kept items (its items are in grouped order): in input order, from `input`.
  std::vector<T> take(const KeyGroups& groups, const std::vector<T>& input) const {
    std::vector<std::size_t> kept;
    for (std::size_t i = 0; i < m_keep.size(); ++i)
      if (m_keep[i]) kept.push_back(groups.order[i]);
    std::sort(kept.begin(), kept.end());
    std::vector<T> values;
    values.reserve(kept.size());
    for (std::size_t index : kept) values.push_back(input[index]);
    return values;
  }

  static constexpr bool uses_scope = Call::with_scope;
  static constexpr bool shippable = is_shippable_function_v<F> && is_wire_serializable_v<T>;
  std::string remote_problem() const override { return remote_problem_of<F, T>(); }
  const std::string& task_name() const override { return TaskRegistration<FilterJob>::name; }
  void accept_results(std::size_t begin, std::size_t end, std::string_view bytes) override {
    auto keep = decode_values<unsigned char>(bytes, end - begin);
    for (std::size_t i = 0; i < keep.size(); ++i) m_keep[begin + i] = keep[i] != 0;
  }
  static void invoke_remote(const TaskInput& input, std::string& out) {
    auto items = std::make_shared<const std::vector<T>>(decode_values<T>(input.items, input.count));
    FilterJob job(std::move(items), F{}, input.memory, input.events, TaskPolicy{});
    job.set_control(input.control);
    job.run(0, input.count);
    encode_vector(job.m_keep, out);
  }

 private:
  template <class V>
  void store(std::size_t i, typename Base::NoState&, V&& keep) {
    m_keep[i] = static_cast<bool>(keep);
  }

  std::vector<unsigned char> m_keep = std::vector<unsigned char>(this->size());  // a byte per item: no shared bits
};

template <class T, class F>
class ForEachJob final : public ItemJob<T, F, ForEachJob<T, F>> {
  using Base = ItemJob<T, F, ForEachJob<T, F>>;
  using Call = typename Base::ItemCall;
  friend Base;

 public:
  using Base::Base;

  bool is_async() const noexcept override { return Call::async; }

  static constexpr bool uses_scope = Call::with_scope;
  static constexpr bool shippable = is_shippable_function_v<F> && is_wire_serializable_v<T>;
  std::string remote_problem() const override { return remote_problem_of<F, T>(); }
  const std::string& task_name() const override { return TaskRegistration<ForEachJob>::name; }
  void accept_results(std::size_t, std::size_t, std::string_view bytes) override {
    if (!bytes.empty()) throw Error("scale: a worker sent results for for_each, which has none");
  }
  static void invoke_remote(const TaskInput& input, std::string&) {
    auto items = std::make_shared<const std::vector<T>>(decode_values<T>(input.items, input.count));
    ForEachJob job(std::move(items), F{}, input.memory, input.events, TaskPolicy{});
    job.set_control(input.control);
    job.run(0, input.count);
  }

 private:
  /// for_each keeps nothing: a value the function returns is dropped.
  template <class... V>
  void store(std::size_t, typename Base::NoState&, V&&...) const noexcept {}
};

/// Each chunk folds its items from `init`; the partial results wait, by chunk, for the loop.
template <class T, class A, class F>
class ReduceJob final : public ItemJob<T, F, ReduceJob<T, A, F>> {
  using Base = ItemJob<T, F, ReduceJob<T, A, F>>;
  using Call = FnCall<F, A&&, const T&>;
  friend Base;

 public:
  ReduceJob(std::shared_ptr<const std::vector<T>> items, F fn, SharedMemory* memory, SharedEventEmitter* events,
            TaskPolicy policy, A init)
      : Base(std::move(items), std::move(fn), memory, events, std::move(policy)), m_init(std::move(init)) {}

  bool is_async() const noexcept override { return Call::async; }

  /// The chunks' partial results in item order (after every chunk has finished).
  std::vector<A> take_partials() {
    std::lock_guard lock(m_partials_mutex);
    std::sort(m_partials.begin(), m_partials.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<A> ordered;
    ordered.reserve(m_partials.size());
    for (auto& [begin, partial] : m_partials) ordered.push_back(std::move(partial));
    m_partials.clear();
    return ordered;
  }
  Scope loop_scope() const noexcept { return this->scope(); }

  static constexpr bool uses_scope = Call::with_scope;
  static constexpr bool shippable = is_shippable_function_v<F> && is_wire_serializable_v<T> &&
                                    is_wire_serializable_v<A>;
  std::string remote_problem() const override { return remote_problem_of<F, T, A>(); }
  const std::string& task_name() const override { return TaskRegistration<ReduceJob>::name; }
  bool splittable() const noexcept override { return false; }
  /// Every chunk folds from `init`, so it travels with each.
  void encode_extra(std::string& out) const override { encode_value(m_init, out); }
  void accept_results(std::size_t begin, std::size_t, std::string_view bytes) override {
    if constexpr (is_wire_serializable_v<A>)
      keep(begin, decode_value<A>(bytes));
    else
      throw NotShippable(remote_problem());
  }
  static void invoke_remote(const TaskInput& input, std::string& out) {
    auto items = std::make_shared<const std::vector<T>>(decode_values<T>(input.items, input.count));
    A init = decode_value<A>(input.extra);
    ReduceJob job(std::move(items), F{}, input.memory, input.events, TaskPolicy{}, std::move(init));
    job.set_control(input.control);
    job.run(0, input.count);
    encode_value(job.take_partials().front(), out);
  }

 private:
  /// The chunk's accumulator, from `init`; it becomes the chunk's partial.
  A start() const { return m_init; }
  decltype(auto) call(Scope& scope, std::size_t i, A& acc) const {
    return Call::call(this->m_fn, &scope, std::move(acc), this->item(i));
  }
  template <class V>
  void store(std::size_t, A& acc, V&& result) {
    acc = std::forward<V>(result);
  }
  void finish(std::size_t begin, A&& acc) { keep(begin, std::move(acc)); }
  /// One lock per chunk: chunks finish on several threads and their number is not known ahead.
  void keep(std::size_t begin, A&& partial) {
    std::lock_guard lock(m_partials_mutex);
    m_partials.emplace_back(begin, std::move(partial));
  }

  A m_init;
  std::mutex m_partials_mutex;
  std::vector<std::pair<std::size_t, A>> m_partials;
};

/// A keyed call's values, from grouped order back to input order.
template <class V>
std::vector<V> in_input_order(std::vector<V> grouped, const KeyGroups& groups) {
  ResultSlots<V> slots(grouped.size());
  for (std::size_t i = 0; i < grouped.size(); ++i) slots.put(groups.order[i], std::move(grouped[i]));
  return slots.take();
}

template <class Job>
Future<std::vector<typename Job::Result>> run_map(std::shared_ptr<Job> job, ScalabilityManager* manager,
                                                  RunOptions options) {
  Future<void> done = dispatch_all(job, manager, std::move(options));
  co_await std::move(done);
  if (job->key_groups()) co_return in_input_order(job->take(), *job->key_groups());
  co_return job->take();
}

template <class Job, class R = typename Job::Result>
Future<std::vector<WorkerResult<R>>> run_map_with_workers(std::shared_ptr<Job> job, ScalabilityManager* manager,
                                                         RunOptions options) {
  job->track_workers();
  Future<void> done = dispatch_all(job, manager, std::move(options));
  co_await std::move(done);
  std::vector<R> values = job->take();
  std::vector<std::string> workers = job->take_workers();
  std::vector<WorkerResult<R>> results;
  results.reserve(values.size());
  for (std::size_t i = 0; i < values.size(); ++i)
    results.push_back(WorkerResult<R>{std::move(values[i]), std::move(workers[i])});
  if (job->key_groups()) co_return in_input_order(std::move(results), *job->key_groups());
  co_return results;
}

template <class Job, class T>
Future<std::vector<T>> run_filter(std::shared_ptr<Job> job, ScalabilityManager* manager, RunOptions options,
                                  std::shared_ptr<const std::vector<T>> input) {
  Future<void> done = dispatch_all(job, manager, std::move(options));
  co_await std::move(done);
  if (job->key_groups()) co_return job->take(*job->key_groups(), *input);
  co_return job->take();
}

inline Future<void> run_for_each(std::shared_ptr<Job> job, ScalabilityManager* manager, RunOptions options) {
  Future<void> done = dispatch_all(std::move(job), manager, std::move(options));
  co_await std::move(done);
}

template <class Job, class A, class C>
Future<A> run_reduce(std::shared_ptr<Job> job, ScalabilityManager* manager, RunOptions options, C combine) {
  using Combine = FnCall<C, A&&, A&&>;
  Future<void> done = dispatch_all(job, manager, std::move(options));
  co_await std::move(done);
  // Partials combine in chunk order on the loop, so an associative but non-commutative
  // combine still gives the sequential answer.
  std::vector<A> partials = job->take_partials();
  A acc = std::move(partials.front());
  Scope scope = job->loop_scope();
  for (std::size_t k = 1; k < partials.size(); ++k) {
    if constexpr (Combine::async) {
      auto pending = Combine::call(combine, &scope, std::move(acc), std::move(partials[k]));
      acc = co_await std::move(pending);
    } else
      acc = Combine::call(combine, &scope, std::move(acc), std::move(partials[k]));
  }
  co_return acc;
}

}  // namespace detail

/// Items that work runs over, and the manager that runs it. The algorithms cut the items into
/// chunks (RunOptions::chunk_size), hand them to the manager, and gather the results by index,
/// so results keep input order whatever order the chunks finish in.
///
/// A function may be `R(T)`, `R(T, Scope&)`, `Future<R>(T)` or `Future<R>(T, Scope&)`; it is
/// stored by value and called through a const reference, possibly from several threads at once.
/// An exception it throws fails the whole call with that exception; chunks not yet started are
/// skipped, and the call completes once the chunks already running have finished.
template <class T>
class Iterator {
 public:
  using value_type = T;

  /// `scale::Iterator<int> numbers({1, 2, 3}, manager);`. The manager must outlive every call.
  Iterator(std::vector<T> items, ScalabilityManager& manager)
      : m_items(std::make_shared<const std::vector<T>>(std::move(items))), m_manager(&manager) {}

  /// From any input range whose elements convert to T.
  template <std::ranges::input_range Range>
  requires(!std::same_as<std::remove_cvref_t<Range>, std::vector<T>> &&
           std::constructible_from<T, std::ranges::range_reference_t<Range>>)
      Iterator(Range&& range, ScalabilityManager& manager)
      : Iterator(collect(std::forward<Range>(range)), manager) {}

  /// The state worker functions reach through `Scope&`. Held by pointer: keep `memory` alive
  /// while calls run.
  Iterator& use_scope(SharedMemory& memory) noexcept {
    m_memory = &memory;
    m_events = nullptr;
    return *this;
  }
  /// The same, with `scope.emit` reaching `events`.
  Iterator& use_scope(SharedMemory& memory, SharedEventEmitter& events) noexcept {
    m_memory = &memory;
    m_events = &events;
    return *this;
  }

  std::size_t size() const noexcept { return m_items->size(); }
  bool empty() const noexcept { return m_items->empty(); }
  const std::vector<T>& items() const noexcept { return *m_items; }
  ScalabilityManager& manager() const noexcept { return *m_manager; }

  /// `fn(item)` for every item → the results in input order.
  template <class F>
  auto map(F fn, RunOptions options = {}) const -> Future<std::vector<typename detail::FnCall<F, const T&>::result>> {
    using Call = detail::FnCall<F, const T&>;
    static_assert(Call::callable, "scale::Iterator<T>::map(fn): fn must be callable as R(T), R(T, scale::Scope&), "
                                  "scale::Future<R>(T) or scale::Future<R>(T, scale::Scope&)");
    using R = typename Call::result;
    static_assert(!std::is_void_v<R>, "scale::Iterator<T>::map(fn): fn returns nothing; use for_each(fn)");
    using Job = detail::MapJob<T, F>;
    if (auto error = check(options)) return make_failed_future<std::vector<R>>(error);
    if (empty()) return make_ready_future(std::vector<R>{});
    auto [job, key_error] = make_job<Job>(std::move(fn), m_memory, m_events, policy(options));
    if (key_error) return make_failed_future<std::vector<R>>(key_error);
    return detail::run_map(std::move(job), m_manager, std::move(options));
  }

  /// map, giving each result with the id of the worker that produced it (WorkerResult), in input
  /// order: to see where items ran (keyed_by, routing), or to act on it.
  template <class F>
  auto map_with_workers(F fn, RunOptions options = {}) const
      -> Future<std::vector<WorkerResult<typename detail::FnCall<F, const T&>::result>>> {
    using Call = detail::FnCall<F, const T&>;
    static_assert(Call::callable, "scale::Iterator<T>::map_with_workers(fn): fn must be callable as R(T), "
                                  "R(T, scale::Scope&), scale::Future<R>(T) or scale::Future<R>(T, scale::Scope&)");
    using R = typename Call::result;
    static_assert(!std::is_void_v<R>, "scale::Iterator<T>::map_with_workers(fn): fn returns nothing; use for_each(fn)");
    using Job = detail::MapJob<T, F>;
    using Results = std::vector<WorkerResult<R>>;
    if (auto error = check(options)) return make_failed_future<Results>(error);
    if (empty()) return make_ready_future(Results{});
    auto [job, key_error] = make_job<Job>(std::move(fn), m_memory, m_events, policy(options));
    if (key_error) return make_failed_future<Results>(key_error);
    return detail::run_map_with_workers(std::move(job), m_manager, std::move(options));
  }

  /// The same items, whose calls route by `key_fn(item)` (a std::string): items with the same key
  /// run on the same live worker, chosen by rendezvous hashing over the workers that meet the call,
  /// so a worker-local cache keyed the same way holds; a worker that joins or leaves moves only
  /// the keys it gains or loses. key_fn runs here, in the calling process, over every item at the
  /// start of each call (an exception it throws fails the call before anything runs), and may
  /// capture. A chunk never spans two keys. Results keep input order; reduce folds the items
  /// grouped by key (groups in order of their first item), so its function must not depend on
  /// the order across keys. T must be copyable (each call runs over the items reordered by key).
  /// On InlineManager (one worker) it changes nothing; on a ThreadPoolManager a key stays on one
  /// thread slot; on a ProcessPoolManager on one child slot (docs/routing.md, "Affinity by key").
  template <class K>
  Iterator keyed_by(K key_fn) const {
    static_assert(std::is_invocable_r_v<std::string, const K&, const T&>,
                  "scale::Iterator<T>::keyed_by(key_fn): key_fn must be callable as std::string(const T&)");
    static_assert(std::is_copy_constructible_v<T>,
                  "scale::Iterator<T>::keyed_by runs each call over the items reordered by key: T must be copyable");
    Iterator keyed = *this;
    keyed.m_key_fn = std::make_shared<const KeyFunction>(std::move(key_fn));
    return keyed;
  }

  /// The items for which `pred(item)` is true, in input order.
  template <class F>
  Future<std::vector<T>> filter(F pred, RunOptions options = {}) const {
    using Call = detail::FnCall<F, const T&>;
    static_assert(Call::callable && std::is_constructible_v<bool, typename Call::result>,
                  "scale::Iterator<T>::filter(pred): pred must be callable as bool(T), bool(T, scale::Scope&), "
                  "scale::Future<bool>(T) or scale::Future<bool>(T, scale::Scope&)");
    static_assert(std::is_copy_constructible_v<T>,
                  "scale::Iterator<T>::filter copies the kept items: T must be copyable");
    if (auto error = check(options)) return make_failed_future<std::vector<T>>(error);
    if (empty()) return make_ready_future(std::vector<T>{});
    auto [job, key_error] = make_job<detail::FilterJob<T, F>>(std::move(pred), m_memory, m_events, policy(options));
    if (key_error) return make_failed_future<std::vector<T>>(key_error);
    return detail::run_filter<detail::FilterJob<T, F>, T>(std::move(job), m_manager, std::move(options), m_items);
  }

  /// Folds the items with `fn(T, T) → T`, associative, with `init` its identity; chunks fold in
  /// parallel and their results combine (with `fn` too) in order.
  template <class F>
  Future<T> reduce(F fn, T init, RunOptions options = {}) const {
    F combine = fn;
    return reduce(std::move(fn), std::move(init), std::move(combine), std::move(options));
  }

  /// Folds with `fn(A, T) → A` from `init` (the identity) in each chunk, then combines the
  /// chunk results in order with `combine(A, A) → A` on the loop thread.
  template <class F, class A, class C>
  requires(!std::same_as<std::remove_cvref_t<C>, RunOptions>) Future<A> reduce(F fn, A init, C combine,
                                                                               RunOptions options = {})
  const {
    using Call = detail::FnCall<F, A&&, const T&>;
    using Combine = detail::FnCall<C, A&&, A&&>;
    static_assert(
        Call::callable && std::is_convertible_v<typename Call::result, A>,
        "scale::Iterator<T>::reduce(fn, init, combine): fn must be callable as A(A, T), A(A, T, scale::Scope&), "
        "scale::Future<A>(A, T) or scale::Future<A>(A, T, scale::Scope&)");
    static_assert(Combine::callable && std::is_convertible_v<typename Combine::result, A>,
                  "scale::Iterator<T>::reduce(fn, init, combine): combine must be callable as A(A, A) "
                  "(or with scale::Scope&, or returning scale::Future<A>)");
    if (auto error = check(options)) return make_failed_future<A>(error);
    if (empty()) return make_ready_future(std::move(init));
    using Job = detail::ReduceJob<T, A, F>;
    auto [job, key_error] = make_job<Job>(std::move(fn), m_memory, m_events, policy(options), std::move(init));
    if (key_error) return make_failed_future<A>(key_error);
    return detail::run_reduce<Job, A, C>(std::move(job), m_manager, std::move(options), std::move(combine));
  }

  /// `fn(item)` for every item, for its effects; a value fn returns is dropped.
  template <class F>
  Future<void> for_each(F fn, RunOptions options = {}) const {
    using Call = detail::FnCall<F, const T&>;
    static_assert(Call::callable, "scale::Iterator<T>::for_each(fn): fn must be callable as R(T), R(T, scale::Scope&), "
                                  "scale::Future<R>(T) or scale::Future<R>(T, scale::Scope&)");
    if (auto error = check(options)) return make_failed_future<void>(error);
    if (empty()) return make_ready_future();
    auto [job, key_error] = make_job<detail::ForEachJob<T, F>>(std::move(fn), m_memory, m_events, policy(options));
    if (key_error) return make_failed_future<void>(key_error);
    return detail::run_for_each(std::move(job), m_manager, std::move(options));
  }

 private:
  template <class Range>
  static std::vector<T> collect(Range&& range) {
    std::vector<T> items;
    if constexpr (std::ranges::sized_range<Range>) items.reserve(std::ranges::size(range));
    for (auto&& item : range) items.emplace_back(std::forward<decltype(item)>(item));
    return items;
  }

  /// What is wrong with the options, before anything runs.
  static std::exception_ptr check(const RunOptions& options) {
    if (options.grace.count() < 0)
      return std::make_exception_ptr(std::invalid_argument(
          "scale::RunOptions::grace is negative (" + std::to_string(options.grace.count()) +
          " ms): give the time a stopped worker may keep running, 0 or more (default 2000 ms)"));
    try {
      requirement(options).validate();
    } catch (const std::invalid_argument&) {
      return std::current_exception();
    }
    return nullptr;
  }

  static detail::Requirement requirement(const RunOptions& options) {
    return detail::Requirement{options.resources, options.labels};
  }

  static detail::TaskPolicy policy(const RunOptions& options) {
    return detail::TaskPolicy{options.max_retries, options.timeout, options.grace, requirement(options),
                              options.chunk_size};
  }

  using KeyFunction = std::function<std::string(const T&)>;

  /// What a call runs over: the items as they are, or (keyed_by) reordered by key with their groups.
  struct Routed {
    std::shared_ptr<const std::vector<T>> items;
    std::shared_ptr<const detail::KeyGroups> groups;
    std::exception_ptr error;  // key_fn threw
  };

  /// One call's Job over what route() gives, with its key groups; or the exception key_fn threw.
  template <class Job, class... Args>
  std::pair<std::shared_ptr<Job>, std::exception_ptr> make_job(Args&&... args) const {
    Routed routed = route();
    if (routed.error) return {nullptr, std::move(routed.error)};
    auto job = std::make_shared<Job>(routed.items, std::forward<Args>(args)...);
    job->set_key_groups(std::move(routed.groups));
    return {std::move(job), nullptr};
  }

  Routed route() const {
    if (!m_key_fn) return Routed{m_items, nullptr, nullptr};
    if constexpr (std::is_copy_constructible_v<T>) {
      try {
        std::vector<std::string> keys;
        keys.reserve(m_items->size());
        for (const T& item : *m_items) keys.push_back((*m_key_fn)(item));
        auto groups = std::make_shared<const detail::KeyGroups>(detail::group_by_key(std::move(keys)));
        std::vector<T> grouped;
        grouped.reserve(m_items->size());
        for (std::size_t index : groups->order) grouped.push_back((*m_items)[index]);
        return Routed{std::make_shared<const std::vector<T>>(std::move(grouped)), std::move(groups), nullptr};
      } catch (...) {
        return Routed{nullptr, nullptr, std::current_exception()};
      }
    } else {
      return Routed{m_items, nullptr, nullptr};  // keyed_by refuses such a T at compile time
    }
  }

  // NOTE: shared with every call in flight, so a call never dangles if the Iterator goes away.
  std::shared_ptr<const std::vector<T>> m_items;
  std::shared_ptr<const KeyFunction> m_key_fn;  // keyed_by; null for none
  ScalabilityManager* m_manager;
  SharedMemory* m_memory = nullptr;
  SharedEventEmitter* m_events = nullptr;
};

template <std::ranges::input_range Range>
Iterator(Range&&, ScalabilityManager&) -> Iterator<std::ranges::range_value_t<Range>>;

}  // namespace scale
