#include "core/host_name.hpp"

#include <unistd.h>

namespace scale::detail {

std::string host_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "unknown";
  return host;
}

}  // namespace scale::detail
