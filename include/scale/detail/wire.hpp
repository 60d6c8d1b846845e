#pragma once
// The wire: how the process pool and the cluster put frames and values on a byte stream.
//
// Frames. A frame is a 16-byte header followed by its payload:
//
//   offset  size  field
//   0       2     magic "SC" (0x53 0x43): a stream that is out of step, or not ours, fails at once
//   2       1     version (wire_version): a worker from another build of the protocol is refused
//   3       1     type (FrameType, never 0)
//   4       4     payload length, little-endian (at most the reader's limit, 256 MiB by default)
//   8       8     request id, little-endian (matches a reply to its request; 0 when unused)
//   16      n     payload
//
// Many frames may be appended to one buffer and go out in one write; a FrameReader is fed
// whatever read() returns and hands back whole frames. A bad header is a scale::Error, never a
// crash, and the reader never allocates more than the limit plus one read's worth.
//
// Values. encode_values/decode_values are the one value codec: trivially copyable types travel
// as their raw bytes (n of them as one block, so a chunk of ints is one memcpy each way); other
// types as one MessagePack array (nlohmann_json's to_msgpack) of their to_json values. Whether a
// type can travel is a compile-time trait, not a static_assert: the thread tiers accept every
// type, and only a process or cluster manager reports wire_type_error<T>() at run time.
// Raw bytes assume the peer runs the same executable (the cluster refuses another build).
//
// Errors travel in the one wire form of src/remote/wire_error.hpp (encode_exception), which the
// peer maps back to the error's own type.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <scale/error.hpp>

namespace scale::detail {

// ----- type names ---------------------------------------------------------------------------

/// A readable name for a mangled type name (typeid(T).name()); the input when it cannot demangle.
std::string demangle(const char* mangled);

/// A readable name of T, e.g. "std::vector<int, std::allocator<int> >".
template <class T>
std::string type_name() {
  return demangle(typeid(T).name());
}

// ----- frames -------------------------------------------------------------------------------

inline constexpr std::uint8_t wire_magic_0 = 0x53;  // 'S'
inline constexpr std::uint8_t wire_magic_1 = 0x43;  // 'C'
inline constexpr std::uint8_t wire_version = 1;
inline constexpr std::size_t frame_header_size = 16;
/// The default bound on one frame's payload.
inline constexpr std::size_t default_max_payload = std::size_t{256} << 20;

/// What a frame carries. The wire only insists that the type is not 0; the protocol layer
/// (manager and worker) gives the values their meaning and may add more.
enum class FrameType : std::uint8_t {
  hello = 1,          ///< worker → manager: who it is (build identity, pid)
  task = 2,           ///< manager → worker: a chunk to run
  result = 3,         ///< worker → manager: a chunk's results
  error = 4,          ///< worker → manager: a chunk's exception (src/remote/wire_error.hpp)
  scope_request = 5,  ///< worker → manager: a Scope call on the manager's memory
  scope_reply = 6,    ///< manager → worker: its answer
  event = 7,          ///< either way: an emitted event
  shutdown = 8,       ///< manager → worker: finish and exit
  stop = 9,           ///< manager → worker (id of a task): its call was stopped; Scope::stop_requested()
  progress = 10,      ///< worker → manager (id of a task): 8-byte little-endian double, the chunk's
                      ///< items done with the running item's fraction (at most one per task every 50 ms)
};

/// One whole frame.
struct Frame {
  FrameType type{};
  std::uint64_t id = 0;
  std::string payload;
};

/// Appends the header of a frame whose payload the caller appends next; returns the offset to
/// give end_frame(). Lets a payload be encoded straight into the output buffer, with no copy.
std::size_t begin_frame(std::string& out, FrameType type, std::uint64_t id);

/// Writes the payload length into the header begun at `frame_offset`. A payload over
/// `max_payload` is removed from `out` again and reported as a scale::Error.
void end_frame(std::string& out, std::size_t frame_offset, std::size_t max_payload = default_max_payload);

/// Appends one whole frame to `out` (which may already hold frames).
void encode_frame(std::string& out, FrameType type, std::uint64_t id, std::string_view payload,
                  std::size_t max_payload = default_max_payload);

/// Sets the request id of the one frame at the start of `frame` (encoded with id 0 before the
/// id was known, e.g. a task frame that waited for a worker).
void set_frame_id(std::string& frame, std::uint64_t id);

/// Reassembles frames from a byte stream fed in slices of any size.
/// After a bad header it is broken for good: every later next() throws the same error.
class FrameReader {
 public:
  explicit FrameReader(std::size_t max_payload = default_max_payload);
  FrameReader(FrameReader&&) noexcept = default;
  FrameReader& operator=(FrameReader&&) noexcept = default;

  /// Copies bytes in.
  void feed(std::string_view bytes);

  /// Room for at least `at_least` bytes, to read() into directly; follow with commit(n).
  std::span<char> prepare(std::size_t at_least = 64 * 1024);
  /// Marks `n` bytes of the last prepare()'s room as read.
  void commit(std::size_t n);

  /// The next whole frame, or nothing until more bytes come. Throws scale::Error on a bad
  /// magic, version or type, or a length over the limit.
  std::optional<Frame> next();

  /// Bytes held that are not yet part of a returned frame.
  std::size_t buffered() const noexcept { return m_end - m_begin; }

  /// For end of stream: throws scale::Error when part of a frame is buffered (a truncated frame).
  void expect_end() const;

  std::size_t max_payload() const noexcept { return m_max_payload; }

 private:
  void reserve_free(std::size_t n);
  [[noreturn]] void fail(std::string message);

  std::unique_ptr<char[]> m_data;
  std::size_t m_capacity = 0;
  std::size_t m_begin = 0;
  std::size_t m_end = 0;
  std::size_t m_max_payload;
  std::string m_error;  // non-empty once broken
};

// ----- values -------------------------------------------------------------------------------

/// Values that travel as their raw bytes. Pointers are excluded: their bytes mean nothing elsewhere.
template <class T>
inline constexpr bool is_wire_raw_v = std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> &&
                                      !std::is_member_pointer_v<T> && !std::is_array_v<T>;

/// Values that nlohmann_json converts both ways (standard types, to_json/from_json found by ADL,
/// NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE, adl_serializer specializations).
template <class T>
inline constexpr bool is_wire_json_v = requires(nlohmann::json& out, const T& value, const nlohmann::json& in) {
  nlohmann::adl_serializer<T>::to_json(out, value);
  in.template get<T>();
};

/// True when values of T can be sent to another process.
template <class T>
inline constexpr bool is_wire_serializable_v = !std::is_reference_v<T> && !std::is_void_v<T> &&
                                               (is_wire_raw_v<T> || is_wire_json_v<T>);

std::string wire_type_error_message(const std::string& type);

/// The most of an item a crash capsule keeps (CrashReport::item).
inline constexpr std::size_t item_text_limit = 4096;
/// `size` raw bytes as text, for a value with no JSON form: {"bytes": "0a1b..."} (cut to the limit).
std::string raw_bytes_text(const void* data, std::size_t size);
/// Cuts `text` to item_text_limit bytes.
std::string cut_item_text(std::string text);

/// A value as JSON text, cut at 4 KiB: what a crash capsule shows of the item that crashed. Every
/// type that crosses processes has one (an int 4321 is `4321` whether it travels as raw bytes or
/// not); a raw type without to_json shows its bytes.
template <class T>
std::string item_json_text(const T& value) {
  if constexpr (is_wire_json_v<T>) {
    try {
      nlohmann::json json = value;
      return cut_item_text(json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } catch (const std::exception&) {
    }
  }
  if constexpr (is_wire_raw_v<T>)
    return raw_bytes_text(&value, sizeof(T));
  else
    return cut_item_text("\"(" + type_name<T>() + ": no JSON form)\"");
}

/// The error a process or cluster manager reports for a value type that cannot be sent.
template <class T>
NotShippable wire_type_error() {
  return NotShippable(wire_type_error_message(type_name<T>()));
}

[[noreturn]] void throw_wire_decode_error(const std::string& type, const std::string& detail);

/// Appends `n` values starting at `items`. Throws wire_type_error<T>() when T cannot travel.
template <class T>
void encode_values(const T* items, std::size_t n, std::string& out) {
  if constexpr (!is_wire_serializable_v<T>) {
    (void)items, (void)n, (void)out;
    throw wire_type_error<T>();
  } else if constexpr (is_wire_raw_v<T>) {
    if (n != 0) out.append(reinterpret_cast<const char*>(items), n * sizeof(T));
  } else {
    // One MessagePack array (array32 header: 0xdd + big-endian count), items streamed into it.
    if (n > 0xffffffffu) throw Error("scale: cannot encode more than 2^32 - 1 values in one payload");
    const auto count = static_cast<std::uint32_t>(n);
    const char header[5] = {static_cast<char>(0xdd), static_cast<char>(count >> 24), static_cast<char>(count >> 16),
                            static_cast<char>(count >> 8), static_cast<char>(count)};
    out.append(header, sizeof header);
    for (std::size_t i = 0; i < n; ++i) {
      nlohmann::json value = items[i];
      nlohmann::json::to_msgpack(value, out);
    }
  }
}

/// Decodes exactly `n` values encoded by encode_values<T>. A payload that is not exactly that is
/// a scale::Error naming the type; so is a T that cannot travel.
template <class T>
std::vector<T> decode_values(std::string_view bytes, std::size_t n) {
  std::vector<T> result;
  if constexpr (!is_wire_serializable_v<T>) {
    (void)bytes, (void)n;
    throw wire_type_error<T>();
  } else if constexpr (is_wire_raw_v<T>) {
    if (n > bytes.size() / sizeof(T) || n * sizeof(T) != bytes.size())
      throw_wire_decode_error(type_name<T>(), std::to_string(bytes.size()) + " bytes do not hold exactly " +
                                                  std::to_string(n) + " values of " + std::to_string(sizeof(T)) +
                                                  " bytes");
    if constexpr (std::is_same_v<std::remove_cv_t<T>, bool>) {
      // A bool byte other than 0 or 1 would be undefined behaviour; check each one.
      result.reserve(n);
      for (char c : bytes) {
        if (c != 0 && c != 1) throw_wire_decode_error("bool", "a byte that is neither 0 nor 1");
        result.push_back(c == 1);
      }
    } else if constexpr (std::is_default_constructible_v<T>) {
      result.resize(n);
      if (n != 0) std::memcpy(static_cast<void*>(result.data()), bytes.data(), bytes.size());
    } else {
      struct Raw {
        char bytes[sizeof(T)];
      };
      result.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        Raw raw;
        std::memcpy(raw.bytes, bytes.data() + i * sizeof(T), sizeof(T));
        result.push_back(std::bit_cast<T>(raw));
      }
    }
  } else {
    nlohmann::json array;
    try {
      array = nlohmann::json::from_msgpack(bytes.begin(), bytes.end(), /*strict=*/true);
    } catch (const nlohmann::json::exception& e) {
      throw_wire_decode_error(type_name<T>(), std::string("malformed MessagePack: ") + e.what());
    }
    if (!array.is_array() || array.size() != n)
      throw_wire_decode_error(type_name<T>(), "expected an array of " + std::to_string(n) + " values, got " +
                                                  (array.is_array() ? "an array of " + std::to_string(array.size())
                                                                    : std::string("a ") + array.type_name()));
    result.reserve(n);
    try {
      for (auto& value : array) result.push_back(value.template get<T>());
    } catch (const nlohmann::json::exception& e) {
      throw_wire_decode_error(type_name<T>(), std::string("from_json failed: ") + e.what());
    }
  }
  return result;
}

/// One value: encode_values with n = 1.
template <class T>
void encode_value(const T& value, std::string& out) {
  encode_values(std::addressof(value), 1, out);
}

/// One value: decode_values with n = 1.
template <class T>
T decode_value(std::string_view bytes) {
  return std::move(decode_values<T>(bytes, 1).front());
}

}  // namespace scale::detail
