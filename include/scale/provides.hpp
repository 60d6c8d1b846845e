#pragma once
/// \file scale::Provides: what a worker offers to calls that need resources or labels, and the
/// one parser of its text form (`--scale-provides gpu=2,mem_gb=64,site=eu-1`).

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace scale {

/// What a worker offers, name -> value. A value that reads as a finite number (gpu=2, mem_gb=64)
/// is an amount: RunOptions::resources holds part of it per running chunk. Any other value
/// (site=eu-1) is a label: RunOptions::labels must match it exactly.
using Provides = std::map<std::string, std::string>;

/// Parses "gpu=2,mem_gb=64,site=eu-1" (entries separated by commas, spaces around them ignored;
/// "" is nothing). Throws std::invalid_argument naming the entry for one without '=', an empty
/// name, a name given twice, or a negative or non-finite amount.
Provides parse_provides(std::string_view text);

/// The text form parse_provides reads, names in order ("" for nothing).
std::string provides_text(const Provides& provides);

/// The amount `name` in `provides`: its value when that is a finite number, else nullopt.
std::optional<double> provided_amount(const Provides& provides, const std::string& name);

}  // namespace scale
