// What a cluster worker's running chunks hold (cluster/held_amounts.hpp).

#include "cluster/held_amounts.hpp"

#include <algorithm>
#include <cmath>

namespace scale::detail {

namespace {

/// Room left for rounding: 0.1 + 0.2 of a gpu fits in 0.3 of one.
constexpr double tolerance = 1e-9;

}  // namespace

void HeldAmounts::set_provides(const Provides& provides) {
  {
    std::lock_guard lock(m_mutex);
    m_provided.clear();
    for (const auto& [name, value] : provides)
      if (const auto amount = provided_amount(provides, name)) m_provided.emplace(name, *amount);
    ++m_releases;
  }
  m_released.notify_all();
}

bool HeldAmounts::fits_locked(const Amounts& need) const {
  for (const auto& [name, amount] : need) {
    const auto provided = m_provided.find(name);
    if (provided == m_provided.end()) return false;
    const auto held = m_held.find(name);
    const double free = provided->second - (held == m_held.end() ? 0.0 : held->second);
    if (amount > free + tolerance) return false;
  }
  return true;
}

std::size_t HeldAmounts::room(const Amounts& need, std::size_t limit) const {
  std::lock_guard lock(m_mutex);
  double room = static_cast<double>(limit);
  for (const auto& [name, amount] : need) {
    const auto provided = m_provided.find(name);
    if (provided == m_provided.end()) return 0;
    const auto held = m_held.find(name);
    const double free = provided->second - (held == m_held.end() ? 0.0 : held->second);
    room = std::min(room, std::floor((free + tolerance) / amount));
  }
  return room <= 0 ? 0 : static_cast<std::size_t>(room);
}

bool HeldAmounts::hold(const Amounts& need) {
  std::lock_guard lock(m_mutex);
  if (!fits_locked(need)) return false;
  for (const auto& [name, amount] : need) m_held[name] += amount;
  return true;
}

void HeldAmounts::release(const Amounts& need) {
  {
    std::lock_guard lock(m_mutex);
    for (const auto& [name, amount] : need) {
      auto held = m_held.find(name);
      if (held == m_held.end()) continue;
      held->second -= amount;
      if (held->second <= tolerance) m_held.erase(held);
    }
    ++m_releases;
  }
  m_released.notify_all();
}

HeldAmounts::Amounts HeldAmounts::free() const {
  std::lock_guard lock(m_mutex);
  Amounts free;
  for (const auto& [name, provided] : m_provided) {
    const auto held = m_held.find(name);
    free.emplace(name, provided - (held == m_held.end() ? 0.0 : held->second));
  }
  return free;
}

void HeldAmounts::wait_for_release(std::chrono::milliseconds limit) {
  std::unique_lock lock(m_mutex);
  const std::uint64_t seen = m_releases;
  m_released.wait_for(lock, limit, [&] { return m_releases != seen; });
}

}  // namespace scale::detail
