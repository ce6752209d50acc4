// Shared memory: where locks, queue control blocks, Value and Array live.
//
// A mapping is a memfd mapped MAP_SHARED: every process forked after it was made sees the same
// bytes, and its descriptor (kept with the mapping, close-on-exec) crosses into a spawn or
// forkserver child with SCM_RIGHTS, which maps the same pages (reduce_mapping/rebuild_mapping).
// Nothing has a name (no /dev/shm entry to leak), its size is sealed, and the kernel frees the
// memory when the last process that maps it or holds its descriptor lets go. In one process the
// mapping is unmapped and its descriptor closed when the last shared_ptr copy goes; objects built
// in it are never destroyed, because other processes may still be using them, so they must not
// own resources outside the mapping.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "multiproc/detail/reduction.hpp"

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

// The reduction of an object in a mapping made by map_shared (any shared_ptr that shares its
// ownership): the mapping's memfd and the object's offset in it.
void reduce_mapping(const std::shared_ptr<const void>& object, msgpack::packer<Buffer>& pk, Reduction& r);
// Maps what reduce_mapping packed and returns the object's address in this process, which keeps
// the mapping alive; Error when fewer than `bytes` lie at the object (a malformed message).
std::shared_ptr<void> rebuild_mapping(const msgpack::object& o, ReceivedFds& fds, std::size_t bytes);

// The same T that make_shared_object built in another process.
template <class T>
std::shared_ptr<T> rebuild_shared_object(const msgpack::object& o, ReceivedFds& fds, std::size_t bytes = sizeof(T)) {
  auto object = rebuild_mapping(o, fds, bytes);
  return std::shared_ptr<T>(object, static_cast<T*>(object.get()));
}

}  // namespace multiproc::detail
