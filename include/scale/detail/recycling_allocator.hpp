#pragma once
// Small blocks for the Future's own allocations (coroutine frames, shared states), kept per
// thread for reuse (src/core/recycling_allocator.cpp).
//
// Why it looks like this:
//   - A step of a `then` chain, a coroutine call and a Promise each allocate one or two small
//     blocks and free them soon after; a per-thread list per size class gives them back without
//     malloc's bookkeeping. A block freed on another thread goes to that thread's list.
//   - The lists are bounded (a few dozen blocks per class); beyond, blocks go back to the heap,
//     and a thread's lists are freed when it exits. Blocks above the largest class, and every
//     block under AddressSanitizer (so it still sees each use after free), use the heap directly.
//   - The two functions are out of line in the library, never inlined into a coroutine: a
//     coroutine may free its frame on another thread than the one it began on, and a compiler may
//     keep a thread-local address across a suspension in the code it inlines (the NOTE in
//     src/store/store_server.cpp); each call here finds its thread's lists afresh.

#include <cstddef>
#include <new>

namespace scale::detail {

/// A block of at least `size` bytes (aligned as operator new aligns); throws std::bad_alloc.
void* recycled_allocate(std::size_t size);
/// Gives back a block from recycled_allocate(size), with the same `size`, on any thread.
void recycled_free(void* block, std::size_t size) noexcept;

/// Whether freed blocks are kept for reuse in this build (false under AddressSanitizer).
bool recycling_blocks() noexcept;
/// How many freed blocks of `size` bytes' class the calling thread keeps now (for tests: the
/// bound per class and thread is 64).
std::size_t recycled_blocks_kept(std::size_t size) noexcept;

/// A standard allocator over recycled_allocate, for std::allocate_shared.
template <class T>
struct RecyclingAllocator {
  using value_type = T;
  RecyclingAllocator() noexcept = default;
  template <class U>
  RecyclingAllocator(const RecyclingAllocator<U>&) noexcept {}  // NOLINT: rebinding, as the standard asks
  T* allocate(std::size_t n) { return static_cast<T*>(recycled_allocate(n * sizeof(T))); }
  void deallocate(T* block, std::size_t n) noexcept { recycled_free(block, n * sizeof(T)); }
  template <class U>
  bool operator==(const RecyclingAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace scale::detail
