// The crash record's layout and the parent's end of it (process/crash_record.hpp).

#include "process/crash_record.hpp"

#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <utility>

#include <scale/detail/loop.hpp>

namespace scale::detail {

namespace {

int add_object(dl_phdr_info* info, std::size_t, void* data) {
  auto& objects = *static_cast<std::vector<LoadedObject>*>(data);
  LoadedObject object;
  object.bias = info->dlpi_addr;
  object.name = info->dlpi_name ? info->dlpi_name : "";
  bool any = false;
  for (ElfW(Half) i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& segment = info->dlpi_phdr[i];
    if (segment.p_type != PT_LOAD) continue;
    const std::uintptr_t begin = info->dlpi_addr + segment.p_vaddr;
    const std::uintptr_t end = begin + segment.p_memsz;
    if (!any || begin < object.begin) object.begin = begin;
    if (!any || end > object.end) object.end = end;
    any = true;
  }
  // The first object is the executable, whose dlpi_name is empty; later empty names (none on
  // glibc) would be indistinguishable from it, so they are left out.
  if (any && (objects.empty() || !object.name.empty())) objects.push_back(std::move(object));
  return 0;
}

/// Reads `size` bytes at `offset`; fewer when the file is shorter.
std::string read_at(int fd, std::size_t offset, std::size_t size) {
  std::string bytes(size, '\0');
  std::size_t got = 0;
  while (got < size) {
    ssize_t n = ::pread(fd, bytes.data() + got, size - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  bytes.resize(got);
  return bytes;
}

std::vector<LoadedObject> parse_loaded_objects(const std::string& text) {
  std::vector<LoadedObject> objects;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    LoadedObject object;
    fields >> std::hex >> object.begin >> object.end >> object.bias;
    if (!fields) continue;
    if (fields.peek() == ' ') fields.get();
    std::getline(fields, object.name);
    objects.push_back(std::move(object));
  }
  return objects;
}

}  // namespace

std::vector<LoadedObject> loaded_objects() {
  std::vector<LoadedObject> objects;
  ::dl_iterate_phdr(add_object, &objects);
  return objects;
}

std::string format_loaded_objects(const std::vector<LoadedObject>& objects) {
  std::ostringstream text;
  text << std::hex;
  for (const LoadedObject& object : objects)
    text << object.begin << ' ' << object.end << ' ' << object.bias << ' ' << object.name << '\n';
  return text.str();
}

CrashRecordFile CrashRecordFile::create() {
  const int fd = ::memfd_create("scale-crash-record", MFD_CLOEXEC);
  if (fd < 0) {
    log_error(std::string("scale: cannot make a crash record for a worker process (memfd_create: ") +
              std::strerror(errno) + "); if it dies of a signal, its WorkerLost has no capsule");
    return CrashRecordFile();
  }
  return CrashRecordFile(fd);
}

CrashRecordFile::CrashRecordFile(CrashRecordFile&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}

CrashRecordFile& CrashRecordFile::operator=(CrashRecordFile&& other) noexcept {
  if (this != &other) {
    if (m_fd >= 0) ::close(m_fd);
    m_fd = std::exchange(other.m_fd, -1);
  }
  return *this;
}

CrashRecordFile::~CrashRecordFile() {
  if (m_fd >= 0) ::close(m_fd);
}

std::optional<CrashRecord> CrashRecordFile::read() const {
  if (m_fd < 0) return std::nullopt;
  const std::string head = read_at(m_fd, crash_header_offset, sizeof(CrashRecordHeader));
  if (head.size() != sizeof(CrashRecordHeader)) return std::nullopt;
  CrashRecord record;
  std::memcpy(&record.header, head.data(), sizeof record.header);
  if (record.header.magic != crash_record_magic) return std::nullopt;
  const std::size_t count = std::min<std::size_t>(record.header.frame_count, crash_max_frames);
  const std::string frames = read_at(m_fd, crash_frames_offset, count * sizeof(void*));
  record.frames.resize(frames.size() / sizeof(void*));
  if (!record.frames.empty()) std::memcpy(record.frames.data(), frames.data(), record.frames.size() * sizeof(void*));
  struct stat info;
  if (::fstat(m_fd, &info) == 0 && static_cast<std::size_t>(info.st_size) > crash_objects_offset)
    record.objects = parse_loaded_objects(
        read_at(m_fd, crash_objects_offset, static_cast<std::size_t>(info.st_size) - crash_objects_offset));
  return record;
}

}  // namespace scale::detail
