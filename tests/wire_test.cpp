// The wire codec: frames and values as the process pool and the cluster send them (errors:
// wire_error_test.cpp).

#include <catch2/catch.hpp>

#include <scale/detail/wire.hpp>

#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using scale::detail::decode_value;
using scale::detail::decode_values;
using scale::detail::encode_value;
using scale::detail::encode_values;
using scale::detail::Frame;
using scale::detail::FrameReader;
using scale::detail::FrameType;

namespace wire_test {

struct Point {
  int x;
  double y;
  char tag;
};

struct Person {
  std::string name;
  int age = 0;
  std::vector<std::string> tags;
  bool operator==(const Person&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Person, name, age, tags)

// Serializable, but neither copyable nor trivially copyable.
struct Handle {
  std::unique_ptr<int> value;
};
void to_json(nlohmann::json& j, const Handle& h) { j = h.value ? nlohmann::json(*h.value) : nlohmann::json(); }
void from_json(const nlohmann::json& j, Handle& h) {
  h.value = j.is_null() ? nullptr : std::make_unique<int>(j.get<int>());
}

// Nothing tells nlohmann_json how to convert it.
struct Opaque {
  std::string text;
};

struct NotDefaultConstructible {
  explicit NotDefaultConstructible(int v) : value(v) {}
  int value;
};

}  // namespace wire_test

namespace {

template <class T>
std::vector<T> round_trip(const std::vector<T>& values) {
  std::string bytes;
  encode_values(values.data(), values.size(), bytes);
  return decode_values<T>(bytes, values.size());
}

std::string frames_of(std::initializer_list<std::pair<std::uint64_t, std::string>> list) {
  std::string out;
  for (auto& [id, payload] : list) scale::detail::encode_frame(out, FrameType::task, id, payload);
  return out;
}

}  // namespace

using namespace wire_test;

// ----- values -------------------------------------------------------------------------------

TEST_CASE("ints and doubles travel as raw bytes, one block for the whole chunk", "[wire]") {
  std::vector<int> ints{1, -2, 3, 2147483647, -2147483647 - 1};
  std::string bytes;
  encode_values(ints.data(), ints.size(), bytes);
  CHECK(bytes.size() == ints.size() * sizeof(int));
  CHECK(std::memcmp(bytes.data(), ints.data(), bytes.size()) == 0);
  CHECK(decode_values<int>(bytes, ints.size()) == ints);

  std::vector<double> doubles{0.0, -1.5, 3.141592653589793, 1e300};
  CHECK(round_trip(doubles) == doubles);
  CHECK(round_trip(std::vector<int>{}).empty());
}

TEST_CASE("a trivially copyable struct travels as its raw bytes", "[wire]") {
  STATIC_REQUIRE(scale::detail::is_wire_raw_v<Point>);
  std::vector<Point> points{{1, 2.5, 'a'}, {-3, 1e-9, 'z'}};
  std::string bytes;
  encode_values(points.data(), points.size(), bytes);
  CHECK(bytes.size() == 2 * sizeof(Point));
  auto back = decode_values<Point>(bytes, 2);
  REQUIRE(back.size() == 2);
  CHECK(back[1].x == -3);
  CHECK(back[1].y == 1e-9);
  CHECK(back[1].tag == 'z');
}

TEST_CASE("a trivially copyable type without a default constructor still decodes", "[wire]") {
  std::vector<NotDefaultConstructible> values{NotDefaultConstructible(7), NotDefaultConstructible(-1)};
  auto back = round_trip(values);
  REQUIRE(back.size() == 2);
  CHECK(back[0].value == 7);
  CHECK(back[1].value == -1);
}

TEST_CASE("bools travel as bytes and a byte other than 0 or 1 is refused", "[wire]") {
  bool values[] = {true, false, true};
  std::string bytes;
  encode_values(values, 3, bytes);
  CHECK(decode_values<bool>(bytes, 3) == std::vector<bool>{true, false, true});
  bytes[1] = 7;
  CHECK_THROWS_AS(decode_values<bool>(bytes, 3), scale::Error);
}

TEST_CASE("strings and vectors of strings travel as MessagePack", "[wire]") {
  std::vector<std::string> strings{"", "hello", std::string("with\0nul", 8), std::string(100000, 'x')};
  CHECK(round_trip(strings) == strings);

  std::vector<std::vector<std::string>> nested{{"a", "b"}, {}, {"c"}};
  CHECK(round_trip(nested) == nested);

  std::vector<std::map<std::string, int>> maps{{{"one", 1}, {"two", 2}}, {}};
  CHECK(round_trip(maps) == maps);

  CHECK(decode_value<std::string>([] {
          std::string out;
          encode_value(std::string("single"), out);
          return out;
        }()) == "single");
}

TEST_CASE("a user type with NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE round-trips", "[wire]") {
  STATIC_REQUIRE(scale::detail::is_wire_serializable_v<Person>);
  STATIC_REQUIRE_FALSE(scale::detail::is_wire_raw_v<Person>);
  std::vector<Person> people{{"Ada", 36, {"math", "engines"}}, {"", 0, {}}};
  CHECK(round_trip(people) == people);
}

TEST_CASE("a move-only type with to_json and from_json round-trips", "[wire]") {
  STATIC_REQUIRE(scale::detail::is_wire_serializable_v<Handle>);
  std::vector<Handle> handles;
  handles.push_back(Handle{std::make_unique<int>(42)});
  handles.push_back(Handle{nullptr});
  std::string bytes;
  encode_values(handles.data(), handles.size(), bytes);
  auto back = decode_values<Handle>(bytes, 2);
  REQUIRE(back.size() == 2);
  REQUIRE(back[0].value);
  CHECK(*back[0].value == 42);
  CHECK_FALSE(back[1].value);
}

TEST_CASE("the trait is false for a type without to_json and its error names the type", "[wire]") {
  STATIC_REQUIRE_FALSE(scale::detail::is_wire_serializable_v<Opaque>);
  STATIC_REQUIRE_FALSE(scale::detail::is_wire_serializable_v<std::vector<Opaque>>);
  STATIC_REQUIRE_FALSE(scale::detail::is_wire_serializable_v<int*>);
  STATIC_REQUIRE(scale::detail::is_wire_serializable_v<std::vector<int>>);
  STATIC_REQUIRE(scale::detail::is_wire_serializable_v<std::string>);

  std::string message = scale::detail::wire_type_error<Opaque>().what();
  CHECK_THAT(message, Catch::Contains("wire_test::Opaque"));
  CHECK_THAT(message,
             Catch::Contains("give the type to_json/from_json (or NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE) to send it "
                             "to other processes"));

  // The codec compiles for such a type and fails at run time, with the same error.
  Opaque opaque{"x"};
  std::string bytes;
  CHECK_THROWS_WITH(encode_values(&opaque, 1, bytes), Catch::Contains("wire_test::Opaque"));
  CHECK_THROWS_AS(decode_values<Opaque>(bytes, 1), scale::Error);
}

TEST_CASE("a malformed or mismatched payload is a scale::Error, not undefined behaviour", "[wire]") {
  std::vector<int> ints{1, 2, 3};
  std::string bytes;
  encode_values(ints.data(), ints.size(), bytes);
  CHECK_THROWS_AS(decode_values<int>(bytes, 4), scale::Error);
  CHECK_THROWS_AS(decode_values<int>(bytes.substr(1), 3), scale::Error);

  std::vector<std::string> strings{"a", "b"};
  std::string packed;
  encode_values(strings.data(), strings.size(), packed);
  CHECK_THROWS_AS(decode_values<std::string>(packed, 3), scale::Error);
  CHECK_THROWS_AS(decode_values<std::string>(packed.substr(0, packed.size() - 1), 2), scale::Error);
  CHECK_THROWS_AS(decode_values<std::string>("\xc1garbage", 1), scale::Error);
  CHECK_THROWS_AS(decode_values<std::string>("", 0), scale::Error);
  // Right shape, wrong element type.
  std::vector<int> numbers{1, 2};
  std::string number_pack;
  nlohmann::json::to_msgpack(nlohmann::json(numbers), number_pack);
  CHECK_THROWS_WITH(decode_values<std::string>(number_pack, 2), Catch::Contains("std::"));
  CHECK_THROWS_AS(decode_values<Person>(number_pack, 2), scale::Error);
}

// ----- frames -------------------------------------------------------------------------------

TEST_CASE("a frame is a 16-byte header with a little-endian length and id", "[wire]") {
  std::string out;
  scale::detail::encode_frame(out, FrameType::result, 0x0102030405060708ull, "abc");
  REQUIRE(out.size() == 16 + 3);
  CHECK(out.substr(0, 4) == std::string("SC\x01\x03", 4));
  CHECK(out.substr(4, 4) == std::string("\x03\0\0\0", 4));
  CHECK(out.substr(8, 8) == std::string("\x08\x07\x06\x05\x04\x03\x02\x01", 8));
  CHECK(out.substr(16) == "abc");
}

TEST_CASE("a frame's id can be set after it was encoded, and nothing else changes", "[wire]") {
  std::string out;
  scale::detail::encode_frame(out, FrameType::task, 0, "payload");
  const std::string before = out;
  scale::detail::set_frame_id(out, 0x1122334455667788ull);
  CHECK(out.substr(8, 8) == std::string("\x88\x77\x66\x55\x44\x33\x22\x11", 8));
  CHECK(out.substr(0, 8) == before.substr(0, 8));
  CHECK(out.substr(16) == "payload");
  FrameReader reader;
  reader.feed(out);
  auto frame = reader.next();
  REQUIRE(frame);
  CHECK(frame->id == 0x1122334455667788ull);
  std::string short_buffer = "SC";
  CHECK_THROWS_AS(scale::detail::set_frame_id(short_buffer, 1), std::logic_error);
}

TEST_CASE("a payload can be encoded straight into the frame buffer", "[wire]") {
  std::string out = "prefix";
  auto at = scale::detail::begin_frame(out, FrameType::task, 9);
  std::vector<int> items{5, 6, 7};
  encode_values(items.data(), items.size(), out);
  scale::detail::end_frame(out, at);

  FrameReader reader;
  reader.feed(std::string_view(out).substr(6));
  auto frame = reader.next();
  REQUIRE(frame);
  CHECK(frame->type == FrameType::task);
  CHECK(frame->id == 9);
  CHECK(decode_values<int>(frame->payload, 3) == items);
}

TEST_CASE("frames split at every byte boundary are reassembled", "[wire]") {
  const std::string stream = frames_of({{1, "first payload"}, {2, ""}, {3, std::string(1000, 'q')}});
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    FrameReader reader;
    std::vector<Frame> frames;
    reader.feed(std::string_view(stream).substr(0, cut));
    while (auto frame = reader.next()) frames.push_back(std::move(*frame));
    reader.feed(std::string_view(stream).substr(cut));
    while (auto frame = reader.next()) frames.push_back(std::move(*frame));
    REQUIRE(frames.size() == 3);
    CHECK(frames[0].id == 1);
    CHECK(frames[0].payload == "first payload");
    CHECK(frames[1].payload.empty());
    CHECK(frames[2].payload == std::string(1000, 'q'));
    CHECK(reader.buffered() == 0);
    CHECK_NOTHROW(reader.expect_end());
  }
}

TEST_CASE("a stream fed one byte at a time yields every frame", "[wire]") {
  const std::string stream = frames_of({{7, "x"}, {8, "yy"}, {9, std::string(300, 'z')}});
  FrameReader reader;
  std::vector<Frame> frames;
  for (char c : stream) {
    auto room = reader.prepare(1);
    room[0] = c;
    reader.commit(1);
    while (auto frame = reader.next()) frames.push_back(std::move(*frame));
  }
  REQUIRE(frames.size() == 3);
  CHECK(frames[2].id == 9);
  CHECK(frames[2].payload.size() == 300);
}

TEST_CASE("many frames in one buffer come out in order", "[wire]") {
  std::string stream;
  for (std::uint64_t id = 1; id <= 1000; ++id)
    scale::detail::encode_frame(stream, FrameType::result, id, std::to_string(id));
  FrameReader reader;
  reader.feed(stream);
  std::uint64_t expected = 1;
  while (auto frame = reader.next()) {
    CHECK(frame->id == expected);
    CHECK(frame->payload == std::to_string(expected));
    ++expected;
  }
  CHECK(expected == 1001);
}

TEST_CASE("a bad magic is refused with a clear error, and the reader stays broken", "[wire]") {
  FrameReader reader;
  reader.feed("GET / HTTP/1.1\r\n\r\n");
  CHECK_THROWS_WITH(reader.next(), Catch::Contains("bad magic") && Catch::Contains("not a scale frame"));
  CHECK_THROWS_AS(reader.next(), scale::Error);

  FrameReader early;  // one wrong byte is enough
  early.feed("X");
  CHECK_THROWS_WITH(early.next(), Catch::Contains("bad magic"));
}

TEST_CASE("another wire version is refused", "[wire]") {
  std::string stream = frames_of({{1, "a"}});
  stream[2] = 99;
  FrameReader reader;
  reader.feed(stream);
  CHECK_THROWS_WITH(reader.next(), Catch::Contains("wire version 99"));
}

TEST_CASE("a length over the limit is refused from the header, before any payload", "[wire]") {
  std::string header = frames_of({{1, ""}});
  header[4] = '\xff';
  header[5] = '\xff';
  header[6] = '\xff';
  header[7] = '\x7f';  // about 2 GiB
  FrameReader reader;
  reader.feed(header);
  CHECK_THROWS_WITH(reader.next(), Catch::Contains("over the limit"));

  FrameReader small(100);
  small.feed(frames_of({{1, std::string(101, 'a')}}));
  CHECK_THROWS_AS(small.next(), scale::Error);
  FrameReader exact(100);
  exact.feed(frames_of({{1, std::string(100, 'a')}}));
  CHECK(exact.next());

  std::string out = "keep";
  auto at = scale::detail::begin_frame(out, FrameType::task, 1);
  out.append(101, 'a');
  CHECK_THROWS_AS(scale::detail::end_frame(out, at, 100), scale::Error);
  CHECK(out == "keep");  // the refused frame is gone again
}

TEST_CASE("a truncated payload is reported at end of stream", "[wire]") {
  std::string stream = frames_of({{1, "complete"}, {2, "cut short"}});
  stream.resize(stream.size() - 3);
  FrameReader reader;
  reader.feed(stream);
  auto first = reader.next();
  REQUIRE(first);
  CHECK(first->payload == "complete");
  CHECK_FALSE(reader.next());
  CHECK(reader.buffered() > 0);
  CHECK_THROWS_WITH(reader.expect_end(), Catch::Contains("truncated"));

  FrameReader header_only;
  header_only.feed(stream.substr(0, 5));
  CHECK_FALSE(header_only.next());
  CHECK_THROWS_AS(header_only.expect_end(), scale::Error);
}

TEST_CASE("frame type 0 is refused on both ends", "[wire]") {
  std::string out;
  CHECK_THROWS_AS(scale::detail::begin_frame(out, FrameType{0}, 1), scale::Error);
  std::string stream = frames_of({{1, "a"}});
  stream[3] = 0;
  FrameReader reader;
  reader.feed(stream);
  CHECK_THROWS_AS(reader.next(), scale::Error);
}
