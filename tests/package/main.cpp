// Built against the installed scale package by tests/package/run.cmake.
// Prints nothing; the exit status is the result.
#include <scale/version.hpp>

#include <string_view>

int main() {
  constexpr std::string_view version = SCALE_VERSION_STRING;
  return version.empty() ? 1 : 0;
}
