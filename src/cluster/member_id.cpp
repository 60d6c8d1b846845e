// The ids of cluster managers and workers (cluster_member_id in cluster/keys.hpp).

#include <unistd.h>

#include <cstdio>
#include <random>
#include <string>

#include "cluster/keys.hpp"

namespace scale::detail {

std::string cluster_member_id() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
  std::random_device device;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(device()));
  return std::string(host) + ":" + std::to_string(::getpid()) + ":" + suffix;
}

}  // namespace scale::detail
