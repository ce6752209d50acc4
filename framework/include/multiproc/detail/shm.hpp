// Anonymous shared memory: where locks, queue control blocks, Value and Array live.
//
// A mapping is MAP_SHARED|MAP_ANONYMOUS: every process forked after it was made sees the same
// bytes, nothing has a name (no /dev/shm entry to leak), and the kernel frees the memory when
// the last process that maps it exits. In one process the mapping is unmapped when the last
// shared_ptr copy goes; objects built in it are never destroyed, because other processes may
// still be using them, so they must not own resources outside the mapping.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace multiproc::detail {

// Maps `bytes` of zero-filled shared memory. OSError when the kernel refuses.
std::shared_ptr<void> map_shared(std::size_t bytes);

// Builds a T in a fresh shared mapping and returns a handle that keeps the mapping alive.
template <class T, class... Args>
std::shared_ptr<T> make_shared_object(Args&&... args) {
  static_assert(std::is_trivially_destructible_v<T>,
                "objects in shared memory are never destroyed: they must not own outside resources");
  auto mapping = map_shared(sizeof(T));
  T* object = ::new (mapping.get()) T(std::forward<Args>(args)...);
  return std::shared_ptr<T>(std::move(mapping), object);
}

}  // namespace multiproc::detail
