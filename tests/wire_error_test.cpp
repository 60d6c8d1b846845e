// The one wire form of errors (src/remote/wire_error.hpp): every library error type crosses as
// itself with what rebuilds it; anything else as a RemoteError naming its type.

#include <catch2/catch.hpp>

#include "remote/wire_error.hpp"

#include <scale/error.hpp>

#include <exception>
#include <stdexcept>
#include <string>

namespace wire_error_test {

class CustomError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A user's own subclass of scale::Error: the receiver cannot construct it.
class UserError : public scale::Error {
 public:
  using scale::Error::Error;
};

}  // namespace wire_error_test

namespace {

using wire_error_test::CustomError;

/// What decode_exception() rebuilt, as the RemoteError it must be.
scale::RemoteError remote_of(const std::string& payload) {
  try {
    std::rethrow_exception(scale::detail::decode_exception(payload));
  } catch (const scale::RemoteError& error) {
    return error;
  } catch (const std::exception& error) {
    FAIL("expected a RemoteError, got: " << error.what());
  }
  throw std::logic_error("unreachable");
}

/// Sends `error` through the MessagePack payload and rethrows what came out.
template <class E>
[[noreturn]] void cross(const E& error) {
  std::string payload;
  scale::detail::encode_exception(std::make_exception_ptr(error), payload);
  std::rethrow_exception(scale::detail::decode_exception(payload));
}

}  // namespace

TEST_CASE("an exception crosses as a RemoteError with its type name and message", "[wire]") {
  std::string payload;
  try {
    throw CustomError("the item was bad");
  } catch (...) {
    scale::detail::encode_exception(std::current_exception(), payload);
  }
  auto error = remote_of(payload);
  CHECK(error.type_name() == "wire_error_test::CustomError");
  CHECK(error.message() == "the item was bad");
  CHECK_THAT(std::string(error.what()), Catch::Contains("wire_error_test::CustomError: the item was bad"));

  payload.clear();
  scale::detail::encode_exception(std::make_exception_ptr(std::out_of_range("index 3")), payload);
  CHECK(remote_of(payload).type_name() == "std::out_of_range");
}

TEST_CASE("a relayed RemoteError keeps its original type, and non-standard exceptions are named", "[wire]") {
  std::string payload;
  scale::detail::encode_exception(std::make_exception_ptr(scale::RemoteError("my::Error", "deep")), payload);
  auto relayed = remote_of(payload);
  CHECK(relayed.type_name() == "my::Error");
  CHECK(relayed.message() == "deep");

  payload.clear();
  scale::detail::encode_exception(std::make_exception_ptr(42), payload);
  CHECK(remote_of(payload).type_name() == "int");
}

TEST_CASE("a malformed error report is a scale::Error", "[wire]") {
  CHECK_THROWS_AS(scale::detail::decode_exception("nonsense"), scale::Error);
  std::string not_an_error;
  nlohmann::json::to_msgpack(nlohmann::json{{"type", 1}}, not_an_error);
  CHECK_THROWS_AS(scale::detail::decode_exception(not_an_error), scale::Error);
  // A known type without what rebuilds it is malformed too, never a half-built error.
  CHECK_THROWS_AS(scale::detail::error_from_json({{"type", "KeyNotFound"}, {"error", "x"}}), scale::Error);
  CHECK_THROWS_AS(
      scale::detail::error_from_json({{"type", "Compacted"}, {"error", "x"}, {"requested", "one"}, {"oldest_kept", 2}}),
      scale::Error);
}

TEST_CASE("the library's errors cross as their own types with their fields and messages", "[wire]") {
  try {
    cross(scale::KeyNotFound("users/ada"));
  } catch (const scale::KeyNotFound& error) {
    CHECK(error.key() == "users/ada");
    CHECK(std::string(error.what()) == scale::KeyNotFound("users/ada").what());
  }
  try {
    cross(scale::TypeMismatch("n", "a string", "int"));
  } catch (const scale::TypeMismatch& error) {
    CHECK(error.key() == "n");
    CHECK(error.stored() == "a string");
    CHECK(error.requested() == "int");
    CHECK(std::string(error.what()) == scale::TypeMismatch("n", "a string", "int").what());
  }
  try {
    cross(scale::Compacted(3, 17));
  } catch (const scale::Compacted& error) {
    CHECK(error.requested() == 3);
    CHECK(error.oldest_kept() == 17);
  }
  try {
    cross(scale::WorkerLost(4321, "killed by SIGABRT", 4));
  } catch (const scale::WorkerLost& error) {
    CHECK(error.index() == 4321);
    CHECK(error.status() == "killed by SIGABRT");
    CHECK(error.attempts() == 4);
  }
  CHECK_THROWS_MATCHES(cross(scale::NotShippable("capture nothing")), scale::NotShippable,
                       Catch::Message("capture nothing"));
  CHECK_THROWS_MATCHES(cross(scale::BuildMismatch("another build")), scale::BuildMismatch,
                       Catch::Message("another build"));
  CHECK_THROWS_MATCHES(cross(scale::NoWorkers("start workers")), scale::NoWorkers, Catch::Message("start workers"));
  CHECK_THROWS_MATCHES(cross(scale::Unsatisfiable("no GPU")), scale::Unsatisfiable, Catch::Message("no GPU"));
  CHECK_THROWS_MATCHES(cross(scale::Cancelled("stopped")), scale::Cancelled, Catch::Message("stopped"));
  CHECK_THROWS_MATCHES(cross(scale::JournalError("disk full")), scale::JournalError, Catch::Message("disk full"));
  CHECK_THROWS_MATCHES(cross(scale::ConnectionError("unreachable")), scale::ConnectionError,
                       Catch::Message("unreachable"));
  CHECK_THROWS_AS(cross(scale::Stopped()), scale::Stopped);
  CHECK_THROWS_AS(cross(scale::BrokenPromise()), scale::BrokenPromise);
  // A plain scale::Error stays one: not a RemoteError, and not any subtype.
  try {
    cross(scale::Error("plain"));
  } catch (const scale::RemoteError&) {
    FAIL("a scale::Error arrived as a RemoteError");
  } catch (const scale::Error& error) {
    CHECK(typeid(error) == typeid(scale::Error));
    CHECK(std::string(error.what()) == "plain");
  }
}

TEST_CASE("the wire form names the type without scale:: and carries what rebuilds it", "[wire]") {
  auto wire = scale::detail::error_to_json(std::make_exception_ptr(scale::TypeMismatch("k", "a string", "int")));
  CHECK(wire.at("type") == "TypeMismatch");
  CHECK(wire.at("key") == "k");
  CHECK(wire.at("stored") == "a string");
  CHECK(wire.at("requested") == "int");
  CHECK_THAT(wire.at("error").get<std::string>(), Catch::Contains("'k'"));
  CHECK(scale::detail::error_to_json(std::make_exception_ptr(scale::KeyNotFound("k"))).at("type") == "KeyNotFound");
  CHECK(scale::detail::error_to_json(std::make_exception_ptr(scale::Compacted(1, 2))).at("oldest_kept") == 2);
  CHECK(scale::detail::error_to_json(std::make_exception_ptr(scale::NoWorkers("x"))).at("type") == "NoWorkers");
}

TEST_CASE("a user's own scale::Error subclass crosses as a RemoteError naming it: an unknown id too", "[wire]") {
  std::string payload;
  scale::detail::encode_exception(std::make_exception_ptr(wire_error_test::UserError("mine")), payload);
  auto error = remote_of(payload);
  CHECK(error.type_name() == "wire_error_test::UserError");
  CHECK(error.message() == "mine");

  // A peer naming a type this build does not know: what it was, and what it said.
  try {
    std::rethrow_exception(scale::detail::error_from_json({{"type", "FutureError"}, {"error", "later"}}));
  } catch (const scale::RemoteError& unknown) {
    CHECK(unknown.type_name() == "FutureError");
    CHECK(unknown.message() == "later");
  }
}
