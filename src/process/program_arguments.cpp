// The program's arguments (process/program_arguments.hpp), set by the Runtime, read by spawns.

#include "process/program_arguments.hpp"

#include <mutex>

namespace scale::detail {

namespace {

std::mutex g_arguments_mutex;
std::vector<std::string> g_arguments;

}  // namespace

std::vector<std::string> program_arguments() {
  std::lock_guard lock(g_arguments_mutex);
  return g_arguments;
}

void set_program_arguments(std::vector<std::string> arguments) {
  std::lock_guard lock(g_arguments_mutex);
  g_arguments = std::move(arguments);
}

}  // namespace scale::detail
