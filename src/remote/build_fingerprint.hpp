#pragma once
// The build fingerprint: what a worker says in its hello (process pool) or its registration
// (cluster), so that a manager gives tasks only to workers that run the same code for the same
// task name. Two processes have the same fingerprint when they run the same executable (its GNU
// build id, or its size and modification time without one) with the same registered tasks.

#include <string>

namespace scale::detail {

/// Identifies this build: the registered task names and the executable, hashed (16 hex digits).
/// NOTE: processes whose SCALE_FINGERPRINT_SALT differs count as different builds (a test hook).
std::string build_fingerprint();

}  // namespace scale::detail
