// scale::Provides: its text form and its amounts (include/scale/provides.hpp).

#include <scale/provides.hpp>

#include <charconv>
#include <cmath>
#include <stdexcept>

namespace scale {

namespace {

std::string_view trimmed(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

/// The value as a number when all of it reads as one (from_chars also reads "inf" and "nan").
std::optional<double> number_of(std::string_view value) {
  double number = 0;
  const char* end = value.data() + value.size();
  const auto [stop, error] = std::from_chars(value.data(), end, number);
  if (value.empty() || error != std::errc() || stop != end) return std::nullopt;
  return number;
}

}  // namespace

Provides parse_provides(std::string_view text) {
  Provides provides;
  if (trimmed(text).empty()) return provides;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view entry = trimmed(text.substr(start, comma - start));
    start = comma + 1;
    const std::size_t equals = entry.find('=');
    const std::string quoted = "'" + std::string(entry) + "'";
    if (equals == std::string_view::npos)
      throw std::invalid_argument("provides entry " + quoted + " has no '=': write name=amount (gpu=2) or name=label (site=eu-1)");
    const std::string name(trimmed(entry.substr(0, equals)));
    const std::string_view value = trimmed(entry.substr(equals + 1));
    if (name.empty()) throw std::invalid_argument("provides entry " + quoted + " has an empty name");
    if (const auto amount = number_of(value); amount && (!std::isfinite(*amount) || *amount < 0))
      throw std::invalid_argument("provides entry " + quoted + " gives a negative or non-finite amount; amounts are finite numbers >= 0");
    if (!provides.emplace(name, std::string(value)).second)
      throw std::invalid_argument("provides entry " + quoted + " names '" + name + "' a second time");
  }
  return provides;
}

std::string provides_text(const Provides& provides) {
  std::string text;
  for (const auto& [name, value] : provides) {
    if (!text.empty()) text += ',';
    text += name + "=" + value;
  }
  return text;
}

std::optional<double> provided_amount(const Provides& provides, const std::string& name) {
  const auto found = provides.find(name);
  if (found == provides.end()) return std::nullopt;
  const auto amount = number_of(found->second);
  if (!amount || !std::isfinite(*amount)) return std::nullopt;
  return amount;
}

}  // namespace scale
