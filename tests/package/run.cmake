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

# Start clean, so nothing left over from an earlier run can make the test pass.
file(REMOVE_RECURSE "${CONSUMER_BINARY_DIR}")

set(config_args "")
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()

message(STATUS "package_consumer: configuring ${CONSUMER_SOURCE_DIR}")
execute_process(
  COMMAND "${CMAKE_COMMAND}"
    -S "${CONSUMER_SOURCE_DIR}" -B "${CONSUMER_BINARY_DIR}"
    -G "${GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
    "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
    "-DCMAKE_EXE_LINKER_FLAGS=${CXX_FLAGS}"
    "-DCMAKE_BUILD_TYPE=${CONFIG}"
    "-DCMAKE_PREFIX_PATH=${PREFIX}"
    "-DSCALE_VERSION=${SCALE_VERSION}"
    # Only the installed tree may satisfy find_package(scale): no package registries.
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
  COMMAND_ERROR_IS_FATAL ANY)

# Make sure the package came from PREFIX, not from some other scale on the system.
file(STRINGS "${CONSUMER_BINARY_DIR}/CMakeCache.txt" scale_dir_line REGEX "^scale_DIR:")
string(REGEX REPLACE "^scale_DIR:[A-Z]+=" "" scale_dir "${scale_dir_line}")
file(REAL_PATH "${PREFIX}" real_prefix)
file(REAL_PATH "${scale_dir}" real_scale_dir)
string(FIND "${real_scale_dir}/" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "package_consumer: scale was found in '${scale_dir}', not under '${PREFIX}'")
endif()

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
