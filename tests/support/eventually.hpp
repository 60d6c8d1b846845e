#pragma once
// Waiting for a state without a sleep of a guessed length: poll it until a deadline.

#include <chrono>
#include <thread>

namespace support {

/// True once `condition()` holds, polled every `poll` until `limit` has passed (then it is asked
/// once more).
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds limit = std::chrono::seconds(10),
                std::chrono::milliseconds poll = std::chrono::milliseconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (condition()) return true;
    std::this_thread::sleep_for(poll);
  }
  return condition();
}

}  // namespace support
