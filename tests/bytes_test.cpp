// The little-endian byte codec every binary layout is written with: the bytes each field puts on
// the wire, and a reader that refuses to run past the end.

#include <catch2/catch.hpp>

#include <scale/detail/bytes.hpp>

#include <cstdint>
#include <functional>
#include <string>

using scale::detail::ByteReader;
using scale::detail::ByteWriter;

namespace {

std::string written(const std::function<void(ByteWriter&)>& write) {
  std::string out;
  ByteWriter writer(out);
  write(writer);
  return out;
}

}  // namespace

TEST_CASE("each field is written little-endian, as the layout table says", "[bytes]") {
  struct Row {
    const char* field;
    std::function<void(ByteWriter&)> write;
    std::string bytes;
  };
  const Row rows[] = {
      {"u8", [](ByteWriter& w) { w.u8(0xab); }, std::string("\xab", 1)},
      {"u32", [](ByteWriter& w) { w.u32(0x01020304u); }, std::string("\x04\x03\x02\x01", 4)},
      {"u32 zero", [](ByteWriter& w) { w.u32(0); }, std::string("\0\0\0\0", 4)},
      {"u64", [](ByteWriter& w) { w.u64(0x0102030405060708ull); }, std::string("\x08\x07\x06\x05\x04\x03\x02\x01", 8)},
      {"u64 max", [](ByteWriter& w) { w.u64(~std::uint64_t{0}); }, std::string(8, '\xff')},
      {"bytes", [](ByteWriter& w) { w.bytes("abc"); }, "abc"},
      {"sized", [](ByteWriter& w) { w.sized("abc"); }, std::string("\x03\0\0\0abc", 7)},
      {"sized empty", [](ByteWriter& w) { w.sized(""); }, std::string("\0\0\0\0", 4)},
      {"reserve_u32 then end_sized",
       [](ByteWriter& w) {
         const auto at = w.reserve_u32();
         w.bytes("hello");
         w.end_sized(at);
       },
       std::string("\x05\0\0\0hello", 9)},
      {"fill_u32 over a reserved field",
       [](ByteWriter& w) {
         w.u8(7);
         const auto at = w.reserve_u32();
         w.fill_u32(at, 0xdeadbeefu);
       },
       std::string("\x07\xef\xbe\xad\xde", 5)},
  };
  for (const Row& row : rows) {
    INFO(row.field);
    CHECK(written(row.write) == row.bytes);
  }
}

TEST_CASE("a writer appends to what the buffer already holds", "[bytes]") {
  std::string out = "head";
  ByteWriter writer(out);
  const auto at = writer.reserve_u32();
  CHECK(at == 4);
  writer.u32(9);
  writer.end_sized(at);
  CHECK(out == std::string("head\x04\0\0\0\x09\0\0\0", 12));
  CHECK(writer.size() == 12);
}

TEST_CASE("the reader reads back every field the writer wrote, in order", "[bytes]") {
  std::string out;
  ByteWriter writer(out);
  writer.u8(200);
  writer.u32(0x80000001u);
  writer.u64(0x8000000000000001ull);
  writer.sized("name");
  writer.bytes("rest of it");

  ByteReader reader(out);
  CHECK(reader.u8() == 200);
  CHECK(reader.u32() == 0x80000001u);
  CHECK(reader.u64() == 0x8000000000000001ull);
  CHECK(reader.sized() == "name");
  CHECK(reader.remaining() == 10);
  CHECK(reader.bytes(4) == "rest");
  CHECK(reader.rest() == " of it");
  CHECK(reader.at_end());
  CHECK(reader.rest().empty());
}

TEST_CASE("a read past the end is a scale::Error that names the layout and the other protocol", "[bytes]") {
  struct Row {
    const char* what;
    std::string bytes;
    std::function<void(ByteReader&)> read;
  };
  const Row rows[] = {
      {"u8 of nothing", "", [](ByteReader& r) { r.u8(); }},
      {"u32 of 3 bytes", std::string("\x01\x02\x03", 3), [](ByteReader& r) { r.u32(); }},
      {"u64 of 7 bytes", std::string(7, '\0'), [](ByteReader& r) { r.u64(); }},
      {"sized whose length runs past the end", std::string("\x09\0\0\0abc", 7), [](ByteReader& r) { r.sized(); }},
      {"sized with a truncated length", std::string("\x01\0", 2), [](ByteReader& r) { r.sized(); }},
      {"bytes past the end", "ab", [](ByteReader& r) { r.bytes(3); }},
  };
  for (const Row& row : rows) {
    INFO(row.what);
    ByteReader reader(row.bytes, "a test record");
    try {
      row.read(reader);
      FAIL("the read should have failed");
    } catch (const scale::Error& error) {
      CHECK_THAT(std::string(error.what()), Catch::Contains("a test record ends early"));
      CHECK_THAT(std::string(error.what()), Catch::Contains("another protocol"));
    }
  }
}

TEST_CASE("a failed read consumes nothing", "[bytes]") {
  ByteReader reader(std::string_view("\x02\0\0", 3));
  CHECK_THROWS_AS(reader.u32(), scale::Error);
  CHECK(reader.remaining() == 3);
  CHECK(reader.u8() == 2);
}

TEST_CASE("store_le and load_le are the fixed-width primitives under both", "[bytes]") {
  char header[8] = {};
  scale::detail::store_le<std::uint32_t>(header, 0xa1b2c3d4u);
  scale::detail::store_le<std::uint32_t>(header + 4, 16);
  CHECK(std::string(header, 8) == std::string("\xd4\xc3\xb2\xa1\x10\0\0\0", 8));
  CHECK(scale::detail::load_le<std::uint32_t>(header) == 0xa1b2c3d4u);
  CHECK(scale::detail::load_le<std::uint64_t>(header) == 0x00000010a1b2c3d4ull);
}
