// Per-thread lists of small blocks for the Future's allocations (include/scale/detail/recycling_allocator.hpp).

#include <scale/detail/recycling_allocator.hpp>

#include <array>
#include <cstdint>

namespace scale::detail {

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kRecycle = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kRecycle = false;
#else
constexpr bool kRecycle = true;
#endif
#else
constexpr bool kRecycle = true;
#endif

constexpr std::size_t kGranule = 32;  // size classes of 32, 64, ... bytes
constexpr std::size_t kClasses = 16;  // up to 512 bytes: a `then` step's frame, a state
constexpr std::uint32_t kKeptPerClass = 64;

struct FreeBlock {
  FreeBlock* next;
};

/// A thread's lists. Trivially destructible and constant-initialized, so it is there (and reads
/// as closed) even while the thread's other thread_locals are being destroyed.
struct Lists {
  std::array<FreeBlock*, kClasses> head{};
  std::array<std::uint32_t, kClasses> count{};
  bool cleanup_registered = false;
  bool closed = false;  // the thread is exiting: blocks go to the heap
};
constinit thread_local Lists t_lists{};

/// Frees a thread's kept blocks when it exits (registered on the first block kept).
struct Cleanup {
  bool armed = false;
  ~Cleanup() {
    t_lists.closed = true;
    for (std::size_t c = 0; c < kClasses; ++c) {
      while (FreeBlock* block = t_lists.head[c]) {
        t_lists.head[c] = block->next;
        ::operator delete(block);
      }
      t_lists.count[c] = 0;
    }
  }
};
thread_local Cleanup t_cleanup;

std::size_t class_of(std::size_t size) noexcept { return (size + kGranule - 1) / kGranule - 1; }

}  // namespace

bool recycling_blocks() noexcept { return kRecycle; }

std::size_t recycled_blocks_kept(std::size_t size) noexcept {
  const std::size_t c = class_of(size);
  return kRecycle && c < kClasses ? t_lists.count[c] : 0;
}

void* recycled_allocate(std::size_t size) {
  const std::size_t c = class_of(size);
  if (kRecycle && c < kClasses) {
    Lists& lists = t_lists;
    if (FreeBlock* block = lists.head[c]) {
      lists.head[c] = block->next;
      --lists.count[c];
      return block;
    }
    return ::operator new((c + 1) * kGranule);
  }
  return ::operator new(size);
}

void recycled_free(void* block, std::size_t size) noexcept {
  const std::size_t c = class_of(size);
  if (kRecycle && c < kClasses) {
    Lists& lists = t_lists;
    if (!lists.closed && lists.count[c] < kKeptPerClass) {
      if (!lists.cleanup_registered) {
        lists.cleanup_registered = true;
        t_cleanup.armed = true;  // constructs it, so its destructor runs when the thread exits
      }
      auto* free_block = static_cast<FreeBlock*>(block);
      free_block->next = lists.head[c];
      lists.head[c] = free_block;
      ++lists.count[c];
      return;
    }
    ::operator delete(block);
    return;
  }
  ::operator delete(block);
}

}  // namespace scale::detail
