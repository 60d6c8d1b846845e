# Included from the top-level CMakeLists.txt: the dashboard's files, compiled into the library,
# where scale::StoreServer serves them at /ui/ (src/store/ui_files.hpp). The one list of them is
# here; each is served by its file name. Editing one regenerates the source and rebuilds it
# (the custom command depends on every file), and a binary needs nothing on disk.
set(SCALE_UI_FILES
  "${PROJECT_SOURCE_DIR}/apps/scale-store/ui/index.html"
  "${PROJECT_SOURCE_DIR}/apps/scale-store/ui/dashboard.js"
  "${PROJECT_SOURCE_DIR}/apps/scale-store/ui/dashboard.css"
  "${PROJECT_SOURCE_DIR}/js/scale.js")

set(_scale_ui_source "${PROJECT_BINARY_DIR}/generated/ui_files_data.cpp")
list(JOIN SCALE_UI_FILES "|" _scale_ui_list)
add_custom_command(
  OUTPUT "${_scale_ui_source}"
  COMMAND "${CMAKE_COMMAND}" "-DOUTPUT=${_scale_ui_source}" "-DFILES=${_scale_ui_list}"
          -P "${PROJECT_SOURCE_DIR}/cmake/embed_files.cmake"
  DEPENDS ${SCALE_UI_FILES} "${PROJECT_SOURCE_DIR}/cmake/embed_files.cmake"
  COMMENT "Embedding the dashboard's files (cmake/ui_files.cmake)"
  VERBATIM)
target_sources(scale PRIVATE "${_scale_ui_source}")
