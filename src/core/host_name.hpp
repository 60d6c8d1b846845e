#pragma once
// The name of the host this process runs on (gethostname), for what a process says about itself:
// a manager's report, the cluster matcher's "same host" rank, a crash capsule.

#include <string>

namespace scale::detail {

/// gethostname(), or "unknown" when it fails.
std::string host_name();

}  // namespace scale::detail
