# cmake -P script behind the ctest test `package_consumer`, run once the fixture
# `package_install` (install.cmake) has installed scale into PREFIX:
#   1. configure tests/package against PREFIX only, with the same compiler, build type and
#      sanitizer flags (CXX_FLAGS, empty outside a sanitizer build),
#   2. build it, 3. run the app.
# Any failing step fails the test.
cmake_minimum_required(VERSION 3.25)

foreach(var CONSUMER_SOURCE_DIR CONSUMER_BINARY_DIR PREFIX GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run.cmake: pass -D${var}=...")
  endif()
endforeach()
if(NOT IS_DIRECTORY "${PREFIX}")
  message(FATAL_ERROR "run.cmake: nothing is installed in ${PREFIX}; the ctest fixture "
                      "package_install (install.cmake) installs it, and ctest runs it first")
endif()

set(config_args "")
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()

message(STATUS "package_consumer: configuring ${CONSUMER_SOURCE_DIR}")
include("${CMAKE_CURRENT_LIST_DIR}/consumer.cmake")
configure_consumer(package_consumer "-DSCALE_VERSION=${SCALE_VERSION}")

message(STATUS "package_consumer: building")
execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${CONSUMER_BINARY_DIR}" ${config_args}
  COMMAND_ERROR_IS_FATAL ANY)

# Single-config generators put the app at the top of the build dir, multi-config ones in <config>/.
set(app "${CONSUMER_BINARY_DIR}/app")
if(NOT EXISTS "${app}" AND CONFIG)
  set(app "${CONSUMER_BINARY_DIR}/${CONFIG}/app")
endif()
message(STATUS "package_consumer: running ${app}")
execute_process(COMMAND "${app}" COMMAND_ERROR_IS_FATAL ANY)
message(STATUS "package_consumer: ok")
