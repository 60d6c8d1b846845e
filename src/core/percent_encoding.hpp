#pragma once
// Percent-encoding (RFC 3986) of URL path segments and query values, one copy for the http://
// client, which encodes keys and names, and the store server, which decodes them and encodes its
// listing's next-page link (src/core/percent_encoding.cpp).

#include <optional>
#include <string>
#include <string_view>

namespace scale::detail {

/// Every byte but the unreserved characters (letters, digits, -._~) as %XX, and '/' kept too when
/// `keep_slash` (a key in a path keeps its slashes).
std::string percent_encode(std::string_view text, bool keep_slash = false);

/// Decodes %XX escapes ('+' is a space when `plus_is_space`, as in a query); nullopt for a
/// malformed escape.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);

}  // namespace scale::detail
