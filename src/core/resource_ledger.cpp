// What a worker provides and what its running chunks hold (src/core/resource_ledger.hpp).

#include "core/resource_ledger.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace scale::detail {

namespace {

/// The one check of a Provides map given as a value rather than as text: what parse_provides
/// accepts, and only what its text form carries back unchanged.
void validate(const Provides& provides, const std::string& owner) {
  Provides read;
  try {
    read = parse_provides(provides_text(provides));
  } catch (const std::invalid_argument& error) {
    throw std::invalid_argument(owner + ": " + error.what());
  }
  if (read != provides)
    throw std::invalid_argument(owner + " {" + provides_text(provides) +
                                "} has a name or value with ',', '=' or spaces at its ends; give names and values "
                                "without them (gpu = \"2\", site = \"eu-1\")");
}

}  // namespace

ResourceLedger::ResourceLedger(Provides provides, const std::string& owner) { set_provides(std::move(provides), owner); }

void ResourceLedger::set_provides(Provides provides, const std::string& owner) {
  validate(provides, owner);
  m_provides = std::move(provides);
  for (auto& [name, amount] : m_amounts) amount.offered = 0;
  for (const auto& [name, value] : m_provides)
    if (const auto offered = provided_amount(m_provides, name)) m_amounts[name].offered = *offered;
  std::erase_if(m_amounts, [](const auto& entry) { return entry.second.offered == 0 && entry.second.holders == 0; });
}

bool ResourceLedger::fits_in(const Amount& amount, double asked) noexcept {
  return amount.held + asked <= amount.offered * (1 + 1e-9);
}

bool ResourceLedger::fits(const Resources& resources) const noexcept {
  for (const auto& [name, asked] : resources) {
    const auto found = m_amounts.find(name);
    if (found == m_amounts.end() || !fits_in(found->second, asked)) return false;
  }
  return true;
}

bool ResourceLedger::take(const Resources& resources) {
  if (!fits(resources)) return false;
  for (const auto& [name, asked] : resources) {
    Amount& amount = m_amounts.find(name)->second;
    amount.held += asked;
    ++amount.holders;
  }
  return true;
}

void ResourceLedger::release(const Resources& resources) noexcept {
  for (const auto& [name, asked] : resources) {
    const auto found = m_amounts.find(name);
    if (found == m_amounts.end() || found->second.holders == 0) continue;  // never taken: nothing to give back
    Amount& amount = found->second;
    amount.held = --amount.holders == 0 ? 0 : std::max(0.0, amount.held - asked);
    if (amount.holders == 0 && amount.offered == 0) m_amounts.erase(found);
  }
}

std::size_t ResourceLedger::room_for(const Resources& resources, std::size_t limit) const noexcept {
  std::size_t room = limit;
  for (const auto& [name, asked] : resources) {
    const auto found = m_amounts.find(name);
    if (found == m_amounts.end()) return 0;
    const Amount& amount = found->second;
    if (!fits_in(amount, asked)) return 0;
    // How many times `asked` fits in what is free, with the same slack as fits_in.
    const double free = amount.offered * (1 + 1e-9) - amount.held;
    const double times = std::floor(free / asked);
    if (times < static_cast<double>(room)) room = static_cast<std::size_t>(times);
  }
  return room;
}

double ResourceLedger::held(const std::string& name) const noexcept {
  const auto found = m_amounts.find(name);
  return found == m_amounts.end() ? 0 : found->second.held;
}

std::size_t ResourceLedger::holders(const std::string& name) const noexcept {
  const auto found = m_amounts.find(name);
  return found == m_amounts.end() ? 0 : found->second.holders;
}

}  // namespace scale::detail
