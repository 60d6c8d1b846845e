// A worker's crash stack, named in the parent (process/crash_symbolizer.hpp).

// Boost.Stacktrace from Debian's libboost_stacktrace_backtrace (linked in CMakeLists.txt), whose
// frame::name(), source_file() and source_line() read the DWARF of this process's own objects
// through libbacktrace (bundled in that library).
#define BOOST_STACKTRACE_DYN_LINK
#include <boost/stacktrace/frame.hpp>

#include "process/crash_symbolizer.hpp"

#include <unistd.h>

#include <climits>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

namespace scale::detail {

namespace {

/// The longest function name a line keeps (a template's can run to pages).
constexpr std::size_t max_name_length = 400;

const LoadedObject* containing(const std::vector<LoadedObject>& objects, std::uintptr_t address) {
  for (const LoadedObject& object : objects)
    if (address >= object.begin && address < object.end) return &object;
  return nullptr;
}

const LoadedObject* named(const std::vector<LoadedObject>& objects, const std::string& name) {
  for (const LoadedObject& object : objects)
    if (object.name == name) return &object;
  return nullptr;
}

std::string executable_path() {
  char path[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  return n > 0 ? std::string(path, static_cast<std::size_t>(n)) : std::string("the executable");
}

std::string hex(std::uintptr_t value) {
  char text[2 + 2 * sizeof value + 1];
  std::snprintf(text, sizeof text, "0x%zx", static_cast<std::size_t>(value));
  return text;
}

/// One frame of the worker, where this process has the same code, and the object's name.
struct Placed {
  std::optional<std::uintptr_t> here;  ///< none when this process has no such object
  std::uintptr_t offset = 0;           ///< within its object (the address itself when unknown)
  std::string object;
};

Placed place(const CrashRecord& record, const std::vector<LoadedObject>& mine, std::uintptr_t address) {
  Placed placed;
  placed.offset = address;
  const LoadedObject* theirs = containing(record.objects, address);
  if (theirs == nullptr) {
    placed.object = "an object the worker loaded after it started";
    return placed;
  }
  placed.offset = address - theirs->bias;
  placed.object = theirs->name.empty() ? executable_path() : theirs->name;
  if (const LoadedObject* ours = named(mine, theirs->name)) placed.here = placed.offset + ours->bias;
  return placed;
}

/// The line of one frame; `exact` for the interrupted instruction, else a return address. On the
/// symbolizer's thread only.
std::string describe(const Placed& placed, bool exact) {
  if (placed.here) {
    const boost::stacktrace::frame frame(reinterpret_cast<const void*>(*placed.here - (exact ? 0 : 1)));
    std::string name = frame.name();
    if (name.size() > max_name_length) name = name.substr(0, max_name_length) + "...";
    if (!name.empty()) {
      const std::string file = frame.source_file();
      const std::size_t number = frame.source_line();
      if (!file.empty() && number > 0) return name + " at " + file + ":" + std::to_string(number);
      return name + " in " + placed.object;
    }
  }
  return hex(placed.offset) + " in " + placed.object;
}

std::vector<std::string> symbolize_here(const CrashRecord& record);

/// The one thread that names frames. NOTE: Boost.Stacktrace keeps its libbacktrace state (the
/// executable's parsed debug information, a few hundred milliseconds to build and never freed) in
/// a thread_local of the shared library: named on each pool's reader threads, every crash would
/// parse it again and leak it. On one long-lived thread it is built once, at the first crash.
class SymbolizerThread {
 public:
  std::vector<std::string> symbolize(const CrashRecord& record) {
    Request request;
    request.record = &record;
    std::unique_lock lock(m_mutex);
    m_requests.push_back(&request);
    m_changed.notify_all();
    m_changed.wait(lock, [&] { return request.done; });
    if (request.error) std::rethrow_exception(request.error);
    return std::move(request.lines);
  }

  static SymbolizerThread& instance() {
    static SymbolizerThread* thread = new SymbolizerThread();  // NOTE: never destroyed; see above
    return *thread;
  }

 private:
  struct Request {
    const CrashRecord* record = nullptr;
    std::vector<std::string> lines;
    std::exception_ptr error;
    bool done = false;
  };

  SymbolizerThread() {
    std::thread([this] { serve(); }).detach();
  }

  void serve() {
    std::unique_lock lock(m_mutex);
    for (;;) {
      m_changed.wait(lock, [&] { return !m_requests.empty(); });
      Request* request = m_requests.front();
      m_requests.pop_front();
      lock.unlock();
      try {
        request->lines = symbolize_here(*request->record);
      } catch (...) {
        request->error = std::current_exception();
      }
      lock.lock();
      request->done = true;
      m_changed.notify_all();
    }
  }

  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::deque<Request*> m_requests;
};

std::vector<std::string> symbolize_here(const CrashRecord& record) {
  const std::vector<LoadedObject> mine = loaded_objects();
  const std::vector<std::uintptr_t>& frames = record.frames;
  // The handler's frames come first, up to the signal trampoline; the interrupted instruction
  // is the first frame of the user's stack.
  std::size_t first = 0;
  bool found = false;
  if (record.header.pc != 0) {
    for (std::size_t i = 0; i < frames.size() && !found; ++i)
      if (frames[i] == record.header.pc) {
        first = i;
        found = true;
      }
  }
  std::vector<std::string> lines;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const bool exact = found ? i == first : i == 0;
    if (found && i < first) continue;
    lines.push_back(describe(place(record, mine, frames[i]), exact));
  }
  if (!found) {
    // No interrupted instruction among the frames (an unwinder that reports the trampoline
    // differently): drop up to the trampoline by its name, when it is there.
    for (std::size_t i = 0; i < lines.size() && i < 16; ++i)
      if (lines[i].rfind("__restore_rt", 0) == 0) {
        lines.erase(lines.begin(), lines.begin() + static_cast<std::ptrdiff_t>(i + 1));
        break;
      }
  }
  return lines;
}

}  // namespace

std::vector<std::string> symbolize_crash(const CrashRecord& record) {
  return SymbolizerThread::instance().symbolize(record);
}

}  // namespace scale::detail
