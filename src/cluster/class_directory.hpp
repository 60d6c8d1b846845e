#pragma once
// The directory of a build's task streams (the hash <tag>:classes:<fingerprint>,
// src/cluster/keys.hpp): one field per manager, naming the requirement classes it keeps a stream
// for and its site. Managers write their own field (cluster/class_streams.hpp); workers read the
// whole hash and serve the streams whose requirement their provides meet
// (cluster/chunk_reader.hpp). Encoded and decoded here alone.
//
// Why a class name and the text beside it: a stream name must be short and stable whatever the
// requirement says (no commas, spaces or colons in a key name readers split), so the name is a
// hash of Requirement::text(); the text and the parsed requirement ride in the directory, where a
// worker needs them to decide, and in messages. "any" is the class of calls that need nothing.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include <scale/detail/requirement.hpp>

#include "cluster/keys.hpp"

namespace scale::detail {

/// The stream class of calls that need nothing.
inline constexpr const char* any_class = "any";

/// The class name of `requirement`: "any" when empty, else "r" and 16 hex digits of the
/// 64-bit FNV-1a hash of its text (the same in every build and on every compiler).
inline std::string class_name(const Requirement& requirement) {
  if (requirement.empty()) return any_class;
  std::uint64_t hash = 14695981039346656037ull;
  for (const unsigned char c : requirement.text()) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string name(17, 'r');
  for (int i = 16; i >= 1; --i, hash >>= 4) name[static_cast<std::size_t>(i)] = digits[hash & 0xf];
  return name;
}

/// One manager's field: its site, its classes by class name, and how many shards each class's
/// stream is spread over (its ?shards=N, src/cluster/keys.hpp). A field without "shards" (every
/// manager with one shard writes none, so that field reads as it always did) means 1.
struct ManagerClasses {
  std::string site;
  std::map<std::string, Requirement> classes;
  std::size_t shards = 1;
};

inline std::string encode_manager_classes(const ManagerClasses& entry) {
  nlohmann::json classes = nlohmann::json::object();
  for (const auto& [name, requirement] : entry.classes)
    classes[name] = nlohmann::json{
        {"text", requirement.text()}, {"resources", requirement.resources}, {"labels", requirement.labels}};
  nlohmann::json field{{"site", entry.site}, {"classes", classes}};
  if (entry.shards > 1) field["shards"] = entry.shards;
  return field.dump();
}

/// The field, or nothing when `text` is not one.
inline std::optional<ManagerClasses> decode_manager_classes(const std::string& text) {
  try {
    const auto json = nlohmann::json::parse(text);
    ManagerClasses entry;
    entry.site = json.value("site", "");
    entry.shards = json.value("shards", std::size_t{1});
    if (entry.shards < 1 || entry.shards > max_shards) return std::nullopt;
    for (const auto& [name, value] : json.at("classes").items()) {
      Requirement requirement;
      if (value.contains("resources")) requirement.resources = value["resources"].get<std::map<std::string, double>>();
      if (value.contains("labels")) requirement.labels = value["labels"].get<std::map<std::string, std::string>>();
      entry.classes.emplace(name, std::move(requirement));
    }
    return entry;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace scale::detail
