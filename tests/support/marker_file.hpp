#pragma once
// Files a test's worker makes to say it reached a point (a chunk is blocked, an item ran once),
// named by what they mark and the pid of the process they concern, so that parallel test runs
// never share one. The test removes the file when it is done with it.

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

namespace support {

/// The marker's path: the temporary directory's "scale-<what>-<pid>".
inline std::filesystem::path marker_file(std::string_view what, int pid) {
  return std::filesystem::temp_directory_path() / ("scale-" + std::string(what) + "-" + std::to_string(pid));
}

/// Makes the marker (a worker's side).
inline void touch_marker(const std::filesystem::path& marker) { std::ofstream(marker).put('1'); }

/// True once the marker exists.
inline bool marker_exists(const std::filesystem::path& marker) {
  std::error_code ignored;
  return std::filesystem::exists(marker, ignored);
}

/// Removes the marker (the test's side), whether or not it was made.
inline void remove_marker(const std::filesystem::path& marker) {
  std::error_code ignored;
  std::filesystem::remove(marker, ignored);
}

}  // namespace support
