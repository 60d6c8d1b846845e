#pragma once
// The crash record: what a process-pool worker's crash handler (process/crash_handler.hpp) leaves
// for its parent when it dies of SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT, and the parent's end
// of it.
//
// Where it goes. The parent makes a memfd per worker before spawning it (CrashRecordFile) and the
// spawner hands it to the child as fd 4 (SpawnOptions::inherited_fd), named by SCALE_CRASH_FD.
// Chosen over the alternatives because:
//   - it is opened before any item runs, so the handler only writes (pwrite, async-signal-safe);
//   - the parent reads it after the death, at leisure: nothing must drain it while the child
//     lives (a pipe must, and may hold as little as one page when the user's pipe quota is used
//     up), and nothing is left behind when either side dies (a file in a directory would be);
//   - it is not the link: another thread of the child may be half-way through a frame on the
//     link when the signal comes, and the handler cannot take the link's lock.
//
// Layout (this machine's byte order: both ends are the same program on the same host):
//   [0, 128)     CrashRecordHeader, written last by the handler: a complete record has its magic
//   [128, 640)   up to crash_max_frames frame addresses (boost::stacktrace::safe_dump_to),
//                innermost first, the handler's own frames included (the symbolizer drops them)
//   [1024, ...)  the worker's loaded objects, written once at worker start (not in the handler):
//                one line "<begin hex> <end hex> <bias hex> <name>\n" per object, the executable
//                first with an empty name. The parent maps each frame to the same object in its
//                own address space (same executable, same libraries, other ASLR bases).

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace scale::detail {

/// The environment variable that names the crash record's descriptor in a worker.
inline constexpr const char* crash_fd_env = "SCALE_CRASH_FD";
/// The most frames a record keeps (the innermost ones: a stack overflow has thousands).
inline constexpr std::size_t crash_max_frames = 64;

inline constexpr std::uint32_t crash_record_magic = 0x53435231;  // "SCR1"
inline constexpr std::size_t crash_header_offset = 0;
inline constexpr std::size_t crash_frames_offset = 128;
inline constexpr std::size_t crash_objects_offset = 1024;

/// The fixed part of a record; trivially copyable, written with one pwrite.
struct CrashRecordHeader {
  std::uint32_t magic = 0;  ///< crash_record_magic once the record is complete
  std::int32_t signal = 0;
  std::int32_t code = 0;              ///< siginfo's si_code
  std::uint32_t frame_count = 0;      ///< frames at crash_frames_offset
  std::uint64_t fault_address = 0;    ///< siginfo's si_addr
  std::uint64_t pc = 0;               ///< the interrupted instruction (0 when unknown)
  std::uint64_t task_id = 0;          ///< running_task().task_id
  std::uint64_t item = 0;             ///< running_task().item: the index within the task's chunk
  std::uint32_t running = 0;          ///< 1 when a task was running (running_task().running)
  std::int32_t pid = 0;
};
static_assert(sizeof(CrashRecordHeader) <= crash_frames_offset);
static_assert(crash_frames_offset + crash_max_frames * sizeof(void*) <= crash_objects_offset);

/// One object mapped in a process (the executable, a shared library, the vDSO).
struct LoadedObject {
  std::uintptr_t begin = 0;  ///< its lowest mapped address
  std::uintptr_t end = 0;    ///< one past its highest
  std::uintptr_t bias = 0;   ///< its load bias (dl_iterate_phdr's dlpi_addr)
  std::string name;          ///< its path; empty for the executable
};

/// This process's loaded objects, the executable first.
std::vector<LoadedObject> loaded_objects();
/// The objects as the record keeps them (see the layout above).
std::string format_loaded_objects(const std::vector<LoadedObject>& objects);

/// A complete record as the parent reads it.
struct CrashRecord {
  CrashRecordHeader header;
  std::vector<std::uintptr_t> frames;  ///< innermost first, in the worker's address space
  std::vector<LoadedObject> objects;   ///< the worker's
};

/// The parent's end: the memfd one worker writes its record to. Move-only; closes it.
class CrashRecordFile {
 public:
  CrashRecordFile() = default;
  /// A new, empty record file; an invalid one (logged) when no memfd can be made, and then the
  /// worker runs without a crash handler.
  static CrashRecordFile create();
  CrashRecordFile(CrashRecordFile&& other) noexcept;
  CrashRecordFile& operator=(CrashRecordFile&& other) noexcept;
  CrashRecordFile(const CrashRecordFile&) = delete;
  CrashRecordFile& operator=(const CrashRecordFile&) = delete;
  ~CrashRecordFile();

  bool valid() const noexcept { return m_fd >= 0; }
  /// The descriptor to hand to the child (SpawnOptions::inherited_fd); -1 when invalid.
  int fd() const noexcept { return m_fd; }
  /// The record, when the worker wrote a complete one (it died in its handler's hands).
  std::optional<CrashRecord> read() const;

 private:
  explicit CrashRecordFile(int fd) noexcept : m_fd(fd) {}
  int m_fd = -1;
};

}  // namespace scale::detail
