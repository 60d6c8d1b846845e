# cmake -P script behind the ctest test `installed_headers`, run once the fixture
# `package_install` (install.cmake) has installed scale into PREFIX:
#   1. every installed header includes only <scale/...> headers that are installed too, the C++
#      standard library, C and POSIX system headers, and <nlohmann/...>; an include of Beast,
#      Asio or any other Boost part, of hiredis, or of a private header under src/ (a quoted
#      include such as "redis/redis_client.hpp") fails the test, naming the header and the line;
#   2. tests/package/headers compiles every installed header alone against PREFIX only.
cmake_minimum_required(VERSION 3.25)

foreach(var CONSUMER_SOURCE_DIR CONSUMER_BINARY_DIR PREFIX GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "installed_headers.cmake: pass -D${var}=...")
  endif()
endforeach()

file(GLOB_RECURSE installed_dirs LIST_DIRECTORIES true "${PREFIX}/*")
set(include_dir "")
foreach(dir IN LISTS installed_dirs)
  if(IS_DIRECTORY "${dir}" AND dir MATCHES "/scale$" AND EXISTS "${dir}/scale.hpp")
    get_filename_component(include_dir "${dir}" DIRECTORY)
  endif()
endforeach()
if(NOT include_dir)
  message(FATAL_ERROR "installed_headers: no scale/scale.hpp under ${PREFIX}; the ctest fixture "
                      "package_install (install.cmake) installs it, and ctest runs it first")
endif()

# The C++ standard library's headers (C++23), its C headers in both spellings, and the POSIX
# headers a public header may need for a type in its interface (pid_t: <sys/types.h>).
set(standard_headers
  algorithm any array atomic barrier bit bitset charconv chrono codecvt compare complex concepts
  condition_variable coroutine deque exception execution expected filesystem flat_map flat_set
  format forward_list fstream functional future generator initializer_list iomanip ios iosfwd
  iostream istream iterator latch limits list locale map mdspan memory memory_resource mutex new
  numbers numeric optional ostream print queue random ranges ratio regex scoped_allocator
  semaphore set shared_mutex source_location span spanstream sstream stack stacktrace stdexcept
  stdfloat stop_token streambuf string string_view strstream syncstream system_error thread tuple
  type_traits typeindex typeinfo unordered_map unordered_set utility valarray variant vector
  version)
set(c_headers assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp
  signal stdalign stdarg stdbool stddef stdint stdio stdlib string tgmath time uchar wchar wctype)
foreach(name IN LISTS c_headers)
  list(APPEND standard_headers "c${name}" "${name}.h")
endforeach()
list(APPEND standard_headers
  fcntl.h poll.h pthread.h sched.h semaphore.h unistd.h
  sys/mman.h sys/socket.h sys/stat.h sys/time.h sys/types.h sys/uio.h sys/un.h sys/wait.h
  netinet/in.h arpa/inet.h)

file(GLOB_RECURSE headers RELATIVE "${include_dir}" "${include_dir}/scale/*")
set(problems "")
foreach(header IN LISTS headers)
  file(STRINGS "${include_dir}/${header}" lines)
  set(line_number 0)
  foreach(line IN LISTS lines)
    math(EXPR line_number "${line_number} + 1")
    if(NOT line MATCHES "^[ \t]*#[ \t]*include[ \t]*([<\"])([^>\"]*)[>\"]")
      continue()
    endif()
    set(quote "${CMAKE_MATCH_1}")
    set(included "${CMAKE_MATCH_2}")
    set(where "${header}:${line_number}: #include ${quote}${included}")
    if(quote STREQUAL "\"")
      list(APPEND problems "${where}\": a quoted include names a private header under src/ (public headers include <scale/...> only)")
    elseif(included MATCHES "^boost/beast" OR included MATCHES "^boost/asio" OR included MATCHES "^asio")
      list(APPEND problems "${where}>: Beast and Asio belong to src/ (the store server, the HTTP client)")
    elseif(included MATCHES "^boost/")
      list(APPEND problems "${where}>: Boost is a private dependency of scale, never in a public header")
    elseif(included MATCHES "hiredis")
      list(APPEND problems "${where}>: hiredis belongs to src/redis/")
    elseif(included MATCHES "^scale/")
      if(NOT EXISTS "${include_dir}/${included}")
        list(APPEND problems "${where}>: that header is not installed (is it a private one under src/?)")
      endif()
    elseif(included MATCHES "^nlohmann/")
      # nlohmann_json is a public dependency (scaleConfig.cmake finds it).
    elseif(NOT included IN_LIST standard_headers)
      list(APPEND problems "${where}>: neither <scale/...>, <nlohmann/...>, nor a standard or POSIX header (a new public dependency needs a find_dependency() in cmake/scaleConfig.cmake.in and a place in this script's list)")
    endif()
  endforeach()
endforeach()
list(LENGTH headers header_count)
if(problems)
  list(JOIN problems "\n  " report)
  message(FATAL_ERROR "installed_headers: the installed tree in ${include_dir} includes what a user "
                      "cannot (or must not) have:\n  ${report}")
endif()
message(STATUS "installed_headers: the includes of ${header_count} installed files are all public")

include("${CMAKE_CURRENT_LIST_DIR}/consumer.cmake")
configure_consumer(installed_headers)

set(config_args "")
if(CONFIG)
  set(config_args --config "${CONFIG}")
endif()
execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${CONSUMER_BINARY_DIR}" ${config_args} -j 2
  COMMAND_ERROR_IS_FATAL ANY)
message(STATUS "installed_headers: ok, every installed header compiles alone")
