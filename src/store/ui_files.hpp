#pragma once
// The dashboard's files as scale-store serves them at /ui/: their bytes are compiled into the
// library (cmake/ui_files.cmake lists them, cmake/embed_files.cmake writes the source that
// defines embedded_ui_files()), so a store serves its page with nothing on disk and the page
// always matches the binary's API.

#include <span>
#include <string_view>

namespace scale::detail {

/// One embedded file: its file name (the last part of its /ui/ path) and its bytes.
struct EmbeddedFile {
  std::string_view name;
  std::string_view bytes;
};

/// Every embedded file, in the order cmake/ui_files.cmake lists them (generated at build time).
std::span<const EmbeddedFile> embedded_ui_files();

/// The file served at /ui/<name>, or null; "" names the page itself (index.html).
const EmbeddedFile* find_ui_file(std::string_view name);

/// The Content-Type of a file by its extension (text/html, text/javascript, text/css; UTF-8).
std::string_view ui_content_type(std::string_view name);

/// The Content-Security-Policy of every file: scripts, styles and connections from the store's
/// own origin only, so no inline script runs and a value shown by the page can never load or
/// send anything elsewhere.
inline constexpr std::string_view ui_content_security_policy =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

}  // namespace scale::detail
