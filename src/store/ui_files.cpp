// The dashboard's embedded files found by name and typed by extension (src/store/ui_files.hpp);
// their bytes are in the source cmake/embed_files.cmake generates.

#include "store/ui_files.hpp"

namespace scale::detail {

const EmbeddedFile* find_ui_file(std::string_view name) {
  if (name.empty()) name = "index.html";
  // A handful of files: a scan is as fast as any index.
  for (const EmbeddedFile& file : embedded_ui_files())
    if (file.name == name) return &file;
  return nullptr;
}

std::string_view ui_content_type(std::string_view name) {
  if (name.ends_with(".html")) return "text/html; charset=utf-8";
  if (name.ends_with(".js") || name.ends_with(".mjs")) return "text/javascript; charset=utf-8";
  if (name.ends_with(".css")) return "text/css; charset=utf-8";
  if (name.ends_with(".svg")) return "image/svg+xml";
  if (name.ends_with(".png")) return "image/png";
  return "application/octet-stream";
}

}  // namespace scale::detail
