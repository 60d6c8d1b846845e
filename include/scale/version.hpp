#pragma once

// The one place the version is written. CMakeLists.txt reads these lines with a regex,
// so keep each on its own line in this exact form.
#define SCALE_VERSION_MAJOR 0
#define SCALE_VERSION_MINOR 1
#define SCALE_VERSION_PATCH 0
#define SCALE_VERSION_STRING "0.1.0"
