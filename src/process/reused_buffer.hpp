#pragma once
// A frame buffer kept from one frame to the next (the pool's outboxes and task encoding, a
// worker's results and sends), so that a small frame costs no allocation; one that grew past
// kept_buffer_capacity for a single large frame gives its memory back once used.

#include <cstddef>
#include <string>

namespace scale::detail {

inline constexpr std::size_t kept_buffer_capacity = std::size_t{1} << 20;

/// Frees `buffer`'s memory when it holds more than kept_buffer_capacity.
inline void trim_reused_buffer(std::string& buffer) {
  if (buffer.capacity() > kept_buffer_capacity) std::string().swap(buffer);
}

}  // namespace scale::detail
