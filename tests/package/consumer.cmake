# Included by run.cmake (package_consumer) and installed_headers.cmake: configures the consumer
# project in CONSUMER_SOURCE_DIR against the installed tree in PREFIX alone, with the same
# compiler, build type and sanitizer flags, and fails unless find_package(scale) found that tree.
# `who` names the test in its messages; extra arguments go to the configure step.
function(configure_consumer who)
  file(REMOVE_RECURSE "${CONSUMER_BINARY_DIR}")  # nothing left over may make the test pass
  execute_process(
    COMMAND "${CMAKE_COMMAND}"
      -S "${CONSUMER_SOURCE_DIR}" -B "${CONSUMER_BINARY_DIR}"
      -G "${GENERATOR}"
      "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
      "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
      "-DCMAKE_EXE_LINKER_FLAGS=${CXX_FLAGS}"
      "-DCMAKE_BUILD_TYPE=${CONFIG}"
      "-DCMAKE_PREFIX_PATH=${PREFIX}"
      ${ARGN}
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
    message(FATAL_ERROR "${who}: scale was found in '${scale_dir}', not under '${PREFIX}'")
  endif()
endfunction()
