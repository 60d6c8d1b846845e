#pragma once
// The one little-endian byte codec: every binary layout in scale (frame headers, task payloads,
// the store's log records) is written with ByteWriter and read with ByteReader.
//
//   ByteWriter  appends u8 / u32 / u64 / raw bytes / u32-length-prefixed bytes to a std::string,
//               and can leave a u32 to fill in once what it measures has been written
//   ByteReader  reads the same from a std::string_view, checking every read against the end:
//               running out is a scale::Error saying the peer speaks another protocol, never a
//               read past the buffer
//   store_le / load_le  the fixed-width primitives under both, for a header held in an array
//
// Integers are unsigned and little-endian whatever the host's byte order; a u32 length counts
// the bytes that follow it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <scale/error.hpp>

namespace scale::detail {

/// Writes `value` as sizeof(U) little-endian bytes at `at`.
template <class U>
requires std::is_unsigned_v<U>
constexpr void store_le(char* at, U value) noexcept {
  for (std::size_t i = 0; i < sizeof(U); ++i) at[i] = static_cast<char>((value >> (8 * i)) & 0xffu);
}

/// Reads sizeof(U) little-endian bytes at `at`; the caller has checked they are there.
template <class U>
requires std::is_unsigned_v<U>
constexpr U load_le(const char* at) noexcept {
  U value = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) value |= static_cast<U>(static_cast<unsigned char>(at[i])) << (8 * i);
  return value;
}

/// Appends little-endian fields to a buffer it does not own (which may already hold data).
class ByteWriter {
 public:
  explicit ByteWriter(std::string& out) noexcept : m_out(&out) {}

  void u8(std::uint8_t value) { m_out->push_back(static_cast<char>(value)); }
  void u32(std::uint32_t value) { append_le(value); }
  void u64(std::uint64_t value) { append_le(value); }
  /// The bytes as they are, with no length.
  void bytes(std::string_view bytes) { m_out->append(bytes); }
  /// A u32 length, then the bytes. Throws scale::Error over 4 GiB - 1.
  void sized(std::string_view bytes) {
    u32(checked_u32(bytes.size()));
    m_out->append(bytes);
  }

  /// Leaves a u32 (zero) to fill in with fill_u32() or end_sized(); returns where it is.
  std::size_t reserve_u32() {
    const std::size_t at = m_out->size();
    u32(0);
    return at;
  }
  void fill_u32(std::size_t at, std::uint32_t value) noexcept { store_le(m_out->data() + at, value); }
  /// Fills the u32 left at `at` with the number of bytes written after it: for a field whose
  /// length is known only once it is encoded (a value encoded straight into the buffer).
  void end_sized(std::size_t at) { fill_u32(at, checked_u32(m_out->size() - at - 4)); }

  /// Bytes in the buffer (the offset the next field is written at).
  std::size_t size() const noexcept { return m_out->size(); }
  std::string& buffer() noexcept { return *m_out; }

 private:
  template <class U>
  void append_le(U value) {
    char bytes[sizeof(U)];
    store_le(bytes, value);
    m_out->append(bytes, sizeof bytes);
  }

  static std::uint32_t checked_u32(std::size_t size) {
    if (size > 0xffffffffu)
      throw Error("scale: a field of " + std::to_string(size) +
                  " bytes is over the 4 GiB - 1 a length can say; "
                  "send the work in smaller chunks");
    return static_cast<std::uint32_t>(size);
  }

  std::string* m_out;
};

/// Reads little-endian fields from `bytes`, front to back. `what` names the layout in errors
/// ("a task payload"): a read past the end throws scale::Error.
class ByteReader {
 public:
  explicit ByteReader(std::string_view bytes, const char* what = "a payload") noexcept : m_bytes(bytes), m_what(what) {}

  std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
  std::uint32_t u32() { return load_le<std::uint32_t>(take(4).data()); }
  std::uint64_t u64() { return load_le<std::uint64_t>(take(8).data()); }
  /// The next `n` bytes.
  std::string_view bytes(std::size_t n) { return take(n); }
  /// A u32 length, then that many bytes (ByteWriter::sized).
  std::string_view sized() { return take(u32()); }
  /// Everything not read yet; the reader is then at its end.
  std::string_view rest() noexcept { return std::exchange(m_bytes, m_bytes.substr(m_bytes.size())); }

  std::size_t remaining() const noexcept { return m_bytes.size(); }
  bool at_end() const noexcept { return m_bytes.empty(); }

 private:
  std::string_view take(std::size_t n) {
    if (n > m_bytes.size())
      throw Error(std::string("scale: ") + m_what + " ends early (" + std::to_string(n) + " bytes wanted, " +
                  std::to_string(m_bytes.size()) +
                  " left); the peer speaks another protocol: run the same build of the program on both ends");
    std::string_view part = m_bytes.substr(0, n);
    m_bytes.remove_prefix(n);
    return part;
  }

  std::string_view m_bytes;
  const char* m_what;
};

}  // namespace scale::detail
