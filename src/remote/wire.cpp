// The frame codec and the value helpers of <scale/detail/wire.hpp>.

#include <scale/detail/wire.hpp>

#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include <scale/detail/bytes.hpp>

namespace scale::detail {

std::string demangle(const char* mangled) {
  if (mangled == nullptr) return "(unknown type)";
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> readable(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && readable ? std::string(readable.get()) : std::string(mangled);
}

// ----- frames -------------------------------------------------------------------------------

namespace {

// Where the header's fields are (the table in wire.hpp).
constexpr std::size_t length_at = 4;
constexpr std::size_t id_at = 8;

std::size_t payload_length(const char* header) { return load_le<std::uint32_t>(header + length_at); }

std::string hex_byte(unsigned char byte) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02x", byte);
  return text;
}

std::string mib(std::size_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

}  // namespace

std::size_t begin_frame(std::string& out, FrameType type, std::uint64_t id) {
  if (type == FrameType{0}) throw Error("scale: frame type 0 is reserved (it marks a corrupt stream)");
  const std::size_t offset = out.size();
  char header[frame_header_size];
  header[0] = static_cast<char>(wire_magic_0);
  header[1] = static_cast<char>(wire_magic_1);
  header[2] = static_cast<char>(wire_version);
  header[3] = static_cast<char>(type);
  store_le<std::uint32_t>(header + length_at, 0);
  store_le<std::uint64_t>(header + id_at, id);
  out.append(header, sizeof header);
  return offset;
}

void end_frame(std::string& out, std::size_t frame_offset, std::size_t max_payload) {
  if (frame_offset + frame_header_size > out.size())
    throw std::logic_error("scale: end_frame() without a matching begin_frame()");
  const std::size_t length = out.size() - frame_offset - frame_header_size;
  const std::size_t limit = std::min<std::size_t>(max_payload, 0xffffffffu);
  if (length > limit) {
    out.resize(frame_offset);
    throw Error("scale: a frame payload of " + std::to_string(length) + " bytes (" + mib(length) +
                ") is over the limit of " + std::to_string(limit) + " bytes; send the work in smaller chunks");
  }
  store_le(out.data() + frame_offset + length_at, static_cast<std::uint32_t>(length));
}

void set_frame_id(std::string& frame, std::uint64_t id) {
  if (frame.size() < frame_header_size) throw std::logic_error("scale: set_frame_id() on a buffer without a frame");
  store_le(frame.data() + id_at, id);
}

void encode_frame(std::string& out, FrameType type, std::uint64_t id, std::string_view payload,
                  std::size_t max_payload) {
  const std::size_t offset = begin_frame(out, type, id);
  out.append(payload);
  end_frame(out, offset, max_payload);
}

FrameReader::FrameReader(std::size_t max_payload) : m_max_payload(std::min<std::size_t>(max_payload, 0xffffffffu)) {}

void FrameReader::reserve_free(std::size_t n) {
  if (m_capacity - m_end >= n) return;
  const std::size_t held = m_end - m_begin;
  if (m_capacity - held >= n) {
    // Enough room once the consumed bytes are dropped.
    if (held != 0) std::memmove(m_data.get(), m_data.get() + m_begin, held);
  } else {
    const std::size_t capacity = std::max(held + n, m_capacity * 2);
    auto data = std::make_unique_for_overwrite<char[]>(capacity);
    if (held != 0) std::memcpy(data.get(), m_data.get() + m_begin, held);
    m_data = std::move(data);
    m_capacity = capacity;
  }
  m_begin = 0;
  m_end = held;
}

void FrameReader::feed(std::string_view bytes) {
  if (bytes.empty()) return;
  auto room = prepare(bytes.size());
  std::memcpy(room.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

std::span<char> FrameReader::prepare(std::size_t at_least) {
  std::size_t want = std::max<std::size_t>(at_least, 1);
  // While a large frame is arriving, make room for the rest of it at once (bounded by the limit,
  // which the header has already passed), so it is not copied on every doubling.
  const std::size_t held = m_end - m_begin;
  if (m_error.empty() && held >= frame_header_size) {
    const std::size_t length = payload_length(m_data.get() + m_begin);
    if (length <= m_max_payload && held < frame_header_size + length)
      want = std::max(want, std::min<std::size_t>(frame_header_size + length - held, std::size_t{64} << 20));
  }
  reserve_free(want);
  return {m_data.get() + m_end, m_capacity - m_end};
}

void FrameReader::commit(std::size_t n) {
  if (n > m_capacity - m_end) throw std::logic_error("scale: FrameReader::commit() past the prepared room");
  m_end += n;
}

void FrameReader::fail(std::string message) {
  m_error = std::move(message);
  throw Error(m_error);
}

std::optional<Frame> FrameReader::next() {
  if (!m_error.empty()) throw Error(m_error);
  const std::size_t held = m_end - m_begin;
  if (held < frame_header_size) {
    // Check the magic as soon as it arrives, so garbage fails without waiting for 16 bytes.
    const char* at = m_data.get() + m_begin;
    if ((held >= 1 && static_cast<unsigned char>(at[0]) != wire_magic_0) ||
        (held >= 2 && static_cast<unsigned char>(at[1]) != wire_magic_1))
      fail("scale: the peer sent bytes that are not a scale frame (bad magic " +
           hex_byte(static_cast<unsigned char>(at[0])) +
           (held >= 2 ? " " + hex_byte(static_cast<unsigned char>(at[1])) : std::string()) +
           ", expected 0x53 0x43); the stream is out of step or the peer is not a scale process");
    return std::nullopt;
  }
  const char* header = m_data.get() + m_begin;
  const auto magic0 = static_cast<unsigned char>(header[0]);
  const auto magic1 = static_cast<unsigned char>(header[1]);
  if (magic0 != wire_magic_0 || magic1 != wire_magic_1)
    fail("scale: the peer sent bytes that are not a scale frame (bad magic " + hex_byte(magic0) + " " +
         hex_byte(magic1) + ", expected 0x53 0x43); the stream is out of step or the peer is not a scale process");
  const auto version = static_cast<unsigned char>(header[2]);
  if (version != wire_version)
    fail("scale: the peer speaks wire version " + std::to_string(version) + ", this build speaks version " +
         std::to_string(wire_version) + "; run the same build of the program on both ends");
  const auto type = static_cast<unsigned char>(header[3]);
  if (type == 0) fail("scale: the peer sent a frame of type 0, which no scale process sends; the stream is corrupt");
  const std::size_t length = payload_length(header);
  if (length > m_max_payload)
    fail("scale: the peer announced a frame of " + std::to_string(length) + " bytes (" + mib(length) +
         "), over the limit of " + std::to_string(m_max_payload) + " bytes (" + mib(m_max_payload) +
         "); refusing it rather than buffering it");
  if (held < frame_header_size + length) return std::nullopt;

  Frame frame;
  frame.type = static_cast<FrameType>(type);
  frame.id = load_le<std::uint64_t>(header + id_at);
  frame.payload.assign(header + frame_header_size, length);
  m_begin += frame_header_size + length;
  if (m_begin == m_end) m_begin = m_end = 0;
  return frame;
}

void FrameReader::expect_end() const {
  if (!m_error.empty()) throw Error(m_error);
  const std::size_t held = m_end - m_begin;
  if (held == 0) return;
  std::string what = "scale: the stream ended in the middle of a frame (" + std::to_string(held) + " bytes";
  if (held >= frame_header_size)
    what += " of a " + std::to_string(frame_header_size + payload_length(m_data.get() + m_begin)) + "-byte frame";
  throw Error(what + " arrived); the peer closed its link or died while sending (truncated payload)");
}

// ----- values -------------------------------------------------------------------------------

std::string cut_item_text(std::string text) {
  if (text.size() > item_text_limit) text.resize(item_text_limit);
  return text;
}

std::string raw_bytes_text(const void* data, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string text = "{\"bytes\":\"";
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size && text.size() + 4 < item_text_limit; ++i) {
    text += digits[bytes[i] >> 4];
    text += digits[bytes[i] & 0xf];
  }
  text += "\"}";
  return cut_item_text(std::move(text));
}

std::string wire_type_error_message(const std::string& type) {
  return "scale: values of type '" + type +
         "' cannot be sent to other processes: the type is not trivially copyable (or is a pointer) "
         "and has no nlohmann_json conversion; give the type to_json/from_json (or "
         "NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE) to send it to other processes, or use InlineManager or "
         "ThreadPoolManager, which never serialize";
}

void throw_wire_decode_error(const std::string& type, const std::string& detail) {
  throw Error("scale: cannot decode values of type '" + type + "' from the peer: " + detail +
              "; both ends must run the same build of the program");
}

}  // namespace scale::detail
