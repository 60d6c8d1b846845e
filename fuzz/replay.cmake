# Included from tests/CMakeLists.txt: each fuzz target (fuzz/<name>.cpp) built with the normal
# compiler and fuzz/replay_main.cpp instead of libFuzzer, and a ctest entry fuzz_replay_<name>
# that feeds it every file of fuzz/corpus/<name>/. A crash input added to a corpus stays fixed.

set(_scale_fuzz_dir "${PROJECT_SOURCE_DIR}/fuzz")
file(GLOB _scale_fuzz_sources CONFIGURE_DEPENDS "${_scale_fuzz_dir}/*.cpp")
list(FILTER _scale_fuzz_sources EXCLUDE REGEX "/replay_main\\.cpp$")
foreach(source IN LISTS _scale_fuzz_sources)
  get_filename_component(name "${source}" NAME_WLE)
  add_executable(replay_${name} "${source}" "${_scale_fuzz_dir}/replay_main.cpp")
  target_link_libraries(replay_${name} PRIVATE scale_internal)
  scale_target_warnings(replay_${name})
  add_test(NAME fuzz_replay_${name} COMMAND replay_${name} "${_scale_fuzz_dir}/corpus/${name}")
  set_tests_properties(fuzz_replay_${name} PROPERTIES TIMEOUT 120)
endforeach()
