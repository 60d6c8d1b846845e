// libFuzzer target for scale-store's log record decoder (scale::detail::decode_log), which
// recovery runs over every log and snapshot file. Any bytes must decode without crashing, stop at
// a valid offset with a classified tail, and every record it accepts must encode back to exactly
// the bytes it was decoded from (the format has one encoding per record).
// Seeds: fuzz/corpus/log_record/ (valid logs, a torn one, a corrupt one).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "store/store_log.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto decoded = scale::detail::decode_log(bytes);
  if (decoded.valid_end > size) std::abort();
  if ((decoded.tail == scale::detail::LogTail::clean) != (decoded.valid_end == size)) std::abort();
  if (decoded.tail != scale::detail::LogTail::clean && decoded.problem.empty()) std::abort();
  std::size_t expected_offset = 0;
  std::string encoded;
  for (const auto& record : decoded.records) {
    if (record.offset != expected_offset) std::abort();
    encoded.clear();
    scale::detail::encode_record(encoded, record);
    if (encoded != bytes.substr(record.offset, record.size)) std::abort();
    expected_offset = record.offset + record.size;
  }
  if (expected_offset != decoded.valid_end) std::abort();
  return 0;
}
