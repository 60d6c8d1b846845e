// The wire form of errors (src/remote/wire_error.hpp): one encoder, one mapping back.

#include "remote/wire_error.hpp"

#include <cxxabi.h>

#include <cstdint>
#include <optional>
#include <typeinfo>
#include <utility>
#include <vector>

#include <scale/detail/wire.hpp>
#include <scale/error.hpp>

namespace scale::detail {

namespace {

using json = nlohmann::json;

json remote_error(const std::string& type, const std::string& message) {
  return {{"type", "RemoteError"},
          {"error", RemoteError(type, message).what()},
          {"remote_type", type},
          {"remote_message", message}};
}

/// The wire form of a scale::Error whose dynamic type is exactly one of the library's, or null.
json library_error(const Error& error) {
  const std::type_info& type = typeid(error);
  const char* what = error.what();
  if (type == typeid(KeyNotFound))
    return {{"type", "KeyNotFound"}, {"error", what}, {"key", static_cast<const KeyNotFound&>(error).key()}};
  if (type == typeid(TypeMismatch)) {
    const auto& mismatch = static_cast<const TypeMismatch&>(error);
    return {{"type", "TypeMismatch"},
            {"error", what},
            {"key", mismatch.key()},
            {"stored", mismatch.stored()},
            {"requested", mismatch.requested()}};
  }
  if (type == typeid(Compacted)) {
    const auto& compacted = static_cast<const Compacted&>(error);
    return {{"type", "Compacted"},
            {"error", what},
            {"requested", compacted.requested()},
            {"oldest_kept", compacted.oldest_kept()}};
  }
  if (type == typeid(WorkerLost)) {
    const auto& lost = static_cast<const WorkerLost&>(error);
    json wire = {{"type", "WorkerLost"},
                 {"error", what},
                 {"index", lost.index()},
                 {"status", lost.status()},
                 {"attempts", lost.attempts()}};
    if (lost.capsule()) wire["capsule"] = crash_report_to_json(*lost.capsule());
    return wire;
  }
  if (type == typeid(RemoteError)) {
    // Relayed as it came, so an error that crosses twice still names its origin.
    const auto& remote = static_cast<const RemoteError&>(error);
    return remote_error(remote.type_name(), remote.message());
  }
  const char* id = nullptr;
  if (type == typeid(Error))
    id = "Error";
  else if (type == typeid(Stopped))
    id = "Stopped";
  else if (type == typeid(BrokenPromise))
    id = "BrokenPromise";
  else if (type == typeid(ConnectionError))
    id = "ConnectionError";
  else if (type == typeid(NotShippable))
    id = "NotShippable";
  else if (type == typeid(BuildMismatch))
    id = "BuildMismatch";
  else if (type == typeid(NoWorkers))
    id = "NoWorkers";
  else if (type == typeid(Unsatisfiable))
    id = "Unsatisfiable";
  else if (type == typeid(Cancelled))
    id = "Cancelled";
  else if (type == typeid(JournalError))
    id = "JournalError";
  if (!id) return nullptr;
  return {{"type", id}, {"error", what}};
}

template <class T>
T field(const json& wire, const char* name) {
  auto at = wire.find(name);
  if (at == wire.end()) throw Error(std::string("the field '") + name + "' is missing");
  return at->get<T>();
}

[[noreturn]] void malformed(const std::string& detail) {
  throw Error("scale: the peer sent a malformed error report (" + detail +
              "); both ends must run the same build of the program");
}

}  // namespace

json crash_report_to_json(const CrashReport& report) {
  return {{"signal", report.signal}, {"signal_name", report.signal_name},
          {"item_index", report.item_index}, {"item", report.item},
          {"stack", report.stack}, {"host", report.host},
          {"pid", report.pid}};
}

CrashReport crash_report_from_json(const json& wire) {
  if (!wire.is_object()) throw Error(std::string("a capsule that is a JSON ") + wire.type_name() + ", not an object");
  try {
    CrashReport report;
    report.signal = field<int>(wire, "signal");
    report.signal_name = field<std::string>(wire, "signal_name");
    report.item_index = field<std::size_t>(wire, "item_index");
    report.item = field<std::string>(wire, "item");
    report.stack = field<std::vector<std::string>>(wire, "stack");
    report.host = field<std::string>(wire, "host");
    report.pid = field<int>(wire, "pid");
    return report;
  } catch (const json::exception& e) {
    throw Error(std::string("a capsule with a field of the wrong type: ") + e.what());
  }
}

json error_to_json(const std::exception_ptr& error) {
  if (!error) return remote_error("(no exception)", "");
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    json wire = library_error(e);
    if (!wire.is_null()) return wire;
    return remote_error(demangle(typeid(e).name()), e.what());
  } catch (const std::exception& e) {
    return remote_error(demangle(typeid(e).name()), e.what());
  } catch (...) {
    const std::type_info* info = abi::__cxa_current_exception_type();
    return remote_error(info ? demangle(info->name()) : std::string("(unknown type)"),
                        "(an exception not derived from std::exception; it has no message)");
  }
}

std::exception_ptr error_from_json(const json& wire) {
  if (!wire.is_object()) malformed(std::string("a JSON ") + wire.type_name() + ", not an object");
  auto type_at = wire.find("type");
  auto error_at = wire.find("error");
  if (type_at == wire.end() || !type_at->is_string() || error_at == wire.end() || !error_at->is_string())
    malformed("an object without a string \"type\" and \"error\"");
  const std::string& type = type_at->get_ref<const std::string&>();
  const std::string& message = error_at->get_ref<const std::string&>();
  try {
    if (type == "KeyNotFound") return std::make_exception_ptr(KeyNotFound(field<std::string>(wire, "key")));
    if (type == "TypeMismatch")
      return std::make_exception_ptr(TypeMismatch(field<std::string>(wire, "key"), field<std::string>(wire, "stored"),
                                                  field<std::string>(wire, "requested")));
    if (type == "Compacted")
      return std::make_exception_ptr(
          Compacted(field<std::int64_t>(wire, "requested"), field<std::int64_t>(wire, "oldest_kept")));
    if (type == "WorkerLost") {
      std::optional<CrashReport> capsule;
      if (auto at = wire.find("capsule"); at != wire.end()) capsule = crash_report_from_json(*at);
      return std::make_exception_ptr(WorkerLost(field<std::size_t>(wire, "index"), field<std::string>(wire, "status"),
                                                field<int>(wire, "attempts"), std::move(capsule)));
    }
    if (type == "RemoteError")
      return std::make_exception_ptr(
          RemoteError(field<std::string>(wire, "remote_type"), field<std::string>(wire, "remote_message")));
  } catch (const json::exception& e) {
    malformed("a " + type + " with a field of the wrong type: " + e.what());
  } catch (const Error& e) {
    malformed("a " + type + " without what rebuilds it: " + e.what());
  }
  if (type == "Error") return std::make_exception_ptr(Error(message));
  if (type == "Stopped") return std::make_exception_ptr(Stopped());
  if (type == "BrokenPromise") return std::make_exception_ptr(BrokenPromise());
  if (type == "ConnectionError") return std::make_exception_ptr(ConnectionError(message));
  if (type == "NotShippable") return std::make_exception_ptr(NotShippable(message));
  if (type == "BuildMismatch") return std::make_exception_ptr(BuildMismatch(message));
  if (type == "NoWorkers") return std::make_exception_ptr(NoWorkers(message));
  if (type == "Unsatisfiable") return std::make_exception_ptr(Unsatisfiable(message));
  if (type == "Cancelled") return std::make_exception_ptr(Cancelled(message));
  if (type == "JournalError") return std::make_exception_ptr(JournalError(message));
  // Not one of ours (a peer that names its own type): what it was, and what it said.
  return std::make_exception_ptr(RemoteError(type, message));
}

void encode_exception(const std::exception_ptr& error, std::string& out) {
  json::to_msgpack(error_to_json(error), out);
}

std::exception_ptr decode_exception(std::string_view payload) {
  json wire;
  try {
    wire = json::from_msgpack(payload.begin(), payload.end(), /*strict=*/true);
  } catch (const json::exception&) {
    malformed(std::to_string(payload.size()) + " bytes that are not MessagePack");
  }
  return error_from_json(wire);
}

}  // namespace scale::detail
