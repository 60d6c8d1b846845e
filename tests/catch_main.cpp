// The shared main for every test executable that does not bring its own
// (those define CATCH_CONFIG_RUNNER and are built without this file).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
