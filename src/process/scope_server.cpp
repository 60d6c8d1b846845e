// answer_scope_request (process/scope_server.hpp): a worker's Scope call run on the parent's
// memory and emitter.

#include "process/scope_server.hpp"

#include <nlohmann/json.hpp>

#include "core/entry_json.hpp"
#include "remote/scope_reply.hpp"
#include <scale/error.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>

namespace scale::detail {

namespace {

nlohmann::json run_scope_call(SharedMemory* memory, SharedEventEmitter* events, const nlohmann::json& request) {
  const std::string op = request.at("op").get<std::string>();
  if (op == "emit") {
    if (!events) throw Error("scale: scope.emit needs iterator.use_scope(memory, events)");
    events->emit(request.at("event").get<std::string>(), request.at("payload")).get();
    return nullptr;
  }
  if (!memory) throw Error("scale: this function uses the scope but the Iterator has no shared state: call use_scope");
  if (op == "set") return memory->set(request.at("object")).get();
  if (op == "entry") {
    auto found = memory->entry(request.at("key").get<std::string>()).get();
    return found ? nlohmann::json(*found) : nlohmann::json(nullptr);
  }
  if (op == "erase") return memory->erase(request.at("key").get<std::string>()).get();
  if (op == "cas")
    return MemoryAccess::backend(*memory)
        .compare_and_set_revision(request.at("key").get<std::string>(), request.at("expected").get<Revision>(),
                                  request.at("value"))
        .get();
  if (op == "increment") {
    Incremented done = MemoryAccess::backend(*memory)
                           .increment_with_revision(request.at("key").get<std::string>(),
                                                    request.at("by").get<std::int64_t>())
                           .get();
    return {{"value", done.value}, {"revision", done.revision}};
  }
  if (op == "list") {
    nlohmann::json entries = nlohmann::json::array();
    for (auto& entry : memory->list(request.at("prefix").get<std::string>()).get()) entries.push_back(entry);
    return entries;
  }
  throw Error("scale: unknown scope call '" + op + "' from a worker");
}

}  // namespace

std::string answer_scope_request(SharedMemory* memory, SharedEventEmitter* events, std::string_view request) {
  try {
    auto call = nlohmann::json::from_msgpack(request.begin(), request.end(), /*strict=*/true);
    return encode_scope_reply(run_scope_call(memory, events, call));
  } catch (...) {
    return encode_scope_reply_error(std::current_exception());
  }
}

}  // namespace scale::detail
