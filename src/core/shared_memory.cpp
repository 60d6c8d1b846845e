// SharedMemory's out-of-line helpers: error-message wording, the bool and integer answers derived
// from the backends' revision forms, and the choice of backend by URL.

#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>
#include "http/http_client.hpp"
#include "redis/redis_client.hpp"

#include <string_view>

#include <scale/detail/wire.hpp>

namespace scale::detail {

std::string describe_json(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::boolean:
      return std::string("a boolean (") + (value.get<bool>() ? "true" : "false") + ")";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return "an integer (" + value.dump() + ")";
    case nlohmann::json::value_t::number_float:
      return "a floating-point number (" + value.dump() + ")";
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::array:
      return "an array";
    case nlohmann::json::value_t::object:
      return "an object";
    case nlohmann::json::value_t::binary:
      return "binary data";
    case nlohmann::json::value_t::discarded:
      break;
  }
  return "a discarded JSON value";
}

std::string type_name(const std::type_info& type) { return demangle(type.name()); }

// The backends answer the revision forms only; SharedMemory's bool and integer answers come from
// them here, resuming where the backend completes (no hop through the loop, as before).
Future<bool> written(Future<Revision> revision) {
  Revision written_at = co_await resume_where_completed(std::move(revision));
  co_return written_at != 0;
}

Future<std::int64_t> sum_of(Future<Incremented> incremented) {
  Incremented done = co_await resume_where_completed(std::move(incremented));
  co_return done.value;
}

namespace {

std::string_view scheme_of(std::string_view url) {
  auto colon = url.find("://");
  return colon == std::string_view::npos ? std::string_view{} : url.substr(0, colon);
}

}  // namespace

// NOTE: the one place a SharedMemory URL picks its backend.
std::shared_ptr<MemoryBackend> make_memory_backend(const std::string& url) {
  auto scheme = scheme_of(url);
  if (scheme == "redis") return make_redis_memory(url);
  if (scheme == "http") return make_http_memory(url);
  throw Error("scale::SharedMemory(\"" + url +
              "\"): unsupported URL; use \"http://host:port\" or \"redis://host:port\", or "
              "scale::SharedMemory() for in-process state");
}

// NOTE: the one place a SharedEventEmitter URL picks its backend.
std::shared_ptr<EventBackend> make_event_backend(const std::string& url) {
  auto scheme = scheme_of(url);
  if (scheme == "redis") return make_redis_events(url);
  if (scheme == "http") return make_http_events(url);
  throw Error("scale::SharedEventEmitter(\"" + url +
              "\"): unsupported URL; use \"http://host:port\" or \"redis://host:port\", or "
              "scale::SharedEventEmitter() for an in-process bus");
}

}  // namespace scale::detail
