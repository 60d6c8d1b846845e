#pragma once
// HeldAmounts: what a cluster worker's running chunks hold of the amounts it provides
// (RunOptions::resources: a chunk needing gpu=1 holds one gpu while it runs), so the worker never
// runs more chunks needing an amount than it provides of it, whatever its --scale-threads or
// --scale-processes say.
//
// Why it looks like this:
//   - The reader (cluster/chunk_reader.hpp) asks room() before it reads a class's stream, and the
//     worker hold()s each chunk it read before starting it: a chunk that no longer fits (another
//     was held first, or an order took the amount away) is given back, never run.
//   - An order may change what the worker provides while chunks run: what they hold stays held,
//     and what is offered is the new amount minus that (below 0 until they end).
//   - A chunk that needs nothing never comes here (the worker checks Requirement::empty() first),
//     so a call with no requirement costs nothing more.
//   - Amounts are doubles (0.5 of a gpu is an amount), compared with a small tolerance so that
//     halves and tenths add up.

#include <condition_variable>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include <scale/provides.hpp>

namespace scale::detail {

class HeldAmounts {
 public:
  using Amounts = std::map<std::string, double>;

  /// What the worker provides now (its amounts; labels are ignored here). Any thread.
  void set_provides(const Provides& provides);
  /// How many chunks that each need `need` fit in what is free now, at most `limit`. Any thread.
  std::size_t room(const Amounts& need, std::size_t limit) const;
  /// Holds `need` if it fits in what is free (true), else holds nothing (false). Any thread.
  bool hold(const Amounts& need);
  /// Gives back what hold() took; wakes wait_for_release(). Any thread.
  void release(const Amounts& need);
  /// What is free of each amount provided (provided minus held).
  Amounts free() const;
  /// Waits until release() or set_provides() is called, or `limit` has passed.
  void wait_for_release(std::chrono::milliseconds limit);

 private:
  bool fits_locked(const Amounts& need) const;

  mutable std::mutex m_mutex;
  std::condition_variable m_released;
  std::uint64_t m_releases = 0;
  Amounts m_provided;
  Amounts m_held;
};

}  // namespace scale::detail
