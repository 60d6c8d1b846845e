// What a call's chunks need, and who can meet it (include/scale/detail/requirement.hpp).

#include <scale/detail/requirement.hpp>

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace scale::detail {

namespace {

std::string amount_text(double amount) {
  std::ostringstream out;
  out << amount;
  return out.str();
}

}  // namespace

std::string Requirement::text() const {
  std::string text;
  auto add = [&text](const std::string& name, const std::string& value) {
    if (!text.empty()) text += ',';
    text += name + "=" + value;
  };
  for (const auto& [name, amount] : resources) add(name, amount_text(amount));
  for (const auto& [name, label] : labels) add(name, label);
  return text;
}

void Requirement::validate() const {
  for (const auto& [name, amount] : resources) {
    if (name.empty()) throw std::invalid_argument("RunOptions::resources has an empty name; name each amount (gpu = 1)");
    if (!std::isfinite(amount) || amount <= 0)
      throw std::invalid_argument("RunOptions::resources[\"" + name + "\"] is " + amount_text(amount) +
                                  "; an amount a chunk holds must be a finite number > 0 (leave the name out to need none)");
  }
  for (const auto& [name, label] : labels)
    if (name.empty()) throw std::invalid_argument("RunOptions::labels has an empty name; name each label (site = \"eu-1\")");
}

bool Requirement::met_by(const Provides& provides) const {
  for (const auto& [name, amount] : resources) {
    const auto offered = provided_amount(provides, name);
    if (!offered || *offered < amount) return false;
  }
  for (const auto& [name, label] : labels) {
    const auto found = provides.find(name);
    if (found == provides.end() || found->second != label) return false;
  }
  return true;
}

std::string unsatisfiable_message(const Requirement& asked,
                                  const std::vector<std::pair<std::string, Provides>>& offers) {
  std::string message = "no worker can run a chunk that needs {" + asked.text() + "}: ";
  if (offers.empty()) {
    message += "no worker has been seen";
  } else {
    message += "the workers offer ";
    bool first = true;
    for (const auto& [worker, provides] : offers) {
      if (!first) message += "; ";
      first = false;
      message += worker + " {" + provides_text(provides) + "}";
    }
  }
  return message + ". Start a worker that provides it (--scale-provides, or the manager's provides option), or ask for less";
}

}  // namespace scale::detail
