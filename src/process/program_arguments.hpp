#pragma once
// The program's arguments as Runtime(argc, argv) got them, kept for the process pool's spawner:
// a worker starts as /proc/self/exe with the same arguments plus its flag, so the program takes
// the same path to its Runtime in the worker as in the parent.

#include <string>
#include <vector>

namespace scale::detail {

/// The arguments (argv[0] first); empty when no Runtime(argc, argv) was built.
std::vector<std::string> program_arguments();
void set_program_arguments(std::vector<std::string> arguments);

}  // namespace scale::detail
