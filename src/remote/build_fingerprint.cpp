// The build fingerprint (remote/build_fingerprint.hpp): an FNV-1a hash of the registered task
// names and the executable's identity.

#include "remote/build_fingerprint.hpp"

#include <elf.h>
#include <link.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <scale/detail/task_registry.hpp>

namespace scale::detail {

namespace {

/// The executable's GNU build id (the linker's hash of its contents, `readelf -n`), or empty when
/// it was linked without one.
const std::string& gnu_build_id() {
  static const std::string id = [] {
    std::string found;
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* out) -> int {
          // The first object is the executable itself.
          for (int i = 0; i < info->dlpi_phnum; ++i) {
            const auto& header = info->dlpi_phdr[i];
            if (header.p_type != PT_NOTE) continue;
            const char* at = reinterpret_cast<const char*>(info->dlpi_addr + header.p_vaddr);
            const char* end = at + header.p_memsz;
            while (at + sizeof(ElfW(Nhdr)) <= end) {
              ElfW(Nhdr) note;
              std::memcpy(&note, at, sizeof note);
              const char* name = at + sizeof note;
              const char* desc = name + ((note.n_namesz + 3) & ~3u);
              const char* next = desc + ((note.n_descsz + 3) & ~3u);
              if (next > end) break;
              if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
                static_cast<std::string*>(out)->assign(desc, note.n_descsz);
                return 1;
              }
              at = next;
            }
          }
          return 1;
        },
        &found);
    return found;
  }();
  return id;
}

}  // namespace

std::string build_fingerprint() {
  std::uint64_t hash = 1469598103934665603ull;  // FNV-1a
  auto mix = [&](std::string_view bytes) {
    for (unsigned char c : bytes) {
      hash ^= c;
      hash *= 1099511628211ull;
    }
    hash ^= 0xff;
    hash *= 1099511628211ull;
  };
  for (const std::string& name : registered_task_names()) mix(name);
  if (const char* salt = std::getenv("SCALE_FINGERPRINT_SALT")) mix(salt);
  // The build id names the executable's contents, so a copy on another server (scp without -p,
  // a container image) matches; without one, its size and modification time stand in.
  if (!gnu_build_id().empty()) {
    mix(gnu_build_id());
  } else if (struct stat st{}; ::stat("/proc/self/exe", &st) == 0) {
    mix(std::to_string(st.st_size));
    mix(std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec));
  }
  char text[32];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

}  // namespace scale::detail
