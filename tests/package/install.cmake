# cmake -P script behind the ctest fixture `package_install`: installs the scale build tree into
# PREFIX, from empty, for the tests that check the installed package (package_consumer,
# installed_headers). Any failing step fails the fixture, and so the tests that need it.
cmake_minimum_required(VERSION 3.25)

foreach(var SCALE_BINARY_DIR PREFIX)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "install.cmake: pass -D${var}=...")
  endif()
endforeach()

# Start clean, so nothing left over from an earlier run (a removed header, an old config file)
# can make a test pass.
file(REMOVE_RECURSE "${PREFIX}")

set(config_args "")
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()

message(STATUS "package_install: installing ${SCALE_BINARY_DIR} into ${PREFIX}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${SCALE_BINARY_DIR}" --prefix "${PREFIX}" ${config_args}
  COMMAND_ERROR_IS_FATAL ANY)
message(STATUS "package_install: ok")
