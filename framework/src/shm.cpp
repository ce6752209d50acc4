#include "multiproc/detail/shm.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <tuple>

#include "multiproc/errors.hpp"
#include "shm_primitives.hpp"

namespace multiproc::detail {

namespace {

[[noreturn]] void throw_errno(const char* what, int err) {
  throw OSError(std::string(what) + ": " + std::strerror(err), err);
}

// Deadlines are steady_clock points, which libstdc++ keeps on CLOCK_MONOTONIC: the clock
// FUTEX_WAIT_BITSET and pthread_mutex_clocklock take absolute times on.
timespec to_timespec(Clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  if (ns < 0) ns = 0;
  return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

}  // namespace

lock_result check_lock_result(pthread_mutex_t& m, int r) {
  switch (r) {
    case 0: return lock_result::acquired;
    case EOWNERDEAD:
      // The previous holder died holding it; what it protected is as it left it (Python's
      // semantics for a killed holder), and the lock itself is usable again.
      pthread_mutex_consistent(&m);
      return lock_result::acquired;
    case ETIMEDOUT:
    case EBUSY: return lock_result::timed_out;
    case EDEADLK: return lock_result::already_owned;
    default: throw_errno("locking a process-shared mutex failed", r);
  }
}

namespace {

// The owner of one mapping: a shared_ptr's deleter, so that any copy (aliased to an object inside)
// finds the memfd again with std::get_deleter.
struct Mapping {
  void* base;
  std::size_t bytes;
  int fd;
  void operator()(void*) const noexcept {
    ::munmap(base, bytes);
    ::close(fd);
  }
};

std::shared_ptr<void> map_fd(int fd, std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    ::close(fd);
    throw_errno("mapping shared memory failed", err);
  }
  return std::shared_ptr<void>(p, Mapping{p, bytes, fd});
}

}  // namespace

std::shared_ptr<void> map_shared(std::size_t bytes) {
  if (bytes == 0) bytes = 1;
  int fd = ::memfd_create("multiproc-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw_errno("creating shared memory failed", errno);
  // Sealed at its size: no process holding the descriptor can shrink it under another's mapping.
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    int err = errno;
    ::close(fd);
    throw_errno("sizing shared memory failed", err);
  }
  return map_fd(fd, bytes);
}

void reduce_mapping(const std::shared_ptr<const void>& object, msgpack::packer<Buffer>& pk, Reduction& r) {
  const auto* mapping = std::get_deleter<Mapping>(object);
  if (!mapping) throw Error("reduce_mapping: the object does not live in a map_shared mapping");
  auto offset = static_cast<std::size_t>(static_cast<const char*>(object.get()) - static_cast<const char*>(mapping->base));
  pk.pack(std::make_tuple(r.add_fd(mapping->fd), offset));
}

std::shared_ptr<void> rebuild_mapping(const msgpack::object& o, ReceivedFds& fds, std::size_t bytes) {
  auto [index, offset] = convert<std::tuple<std::size_t, std::size_t>>(o);
  int fd = fds.take(index);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0 || offset > static_cast<std::size_t>(st.st_size) ||
      bytes > static_cast<std::size_t>(st.st_size) - offset) {
    ::close(fd);
    throw Error("a shared object's memory is smaller than its handle says (a malformed message)");
  }
  auto mapping = map_fd(fd, static_cast<std::size_t>(st.st_size));
  return std::shared_ptr<void>(mapping, static_cast<char*>(mapping.get()) + offset);
}

void init_robust_mutex(pthread_mutex_t& m, mutex_kind kind) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutexattr_settype(&attr,
                            kind == mutex_kind::errorcheck ? PTHREAD_MUTEX_ERRORCHECK : PTHREAD_MUTEX_NORMAL);
  int r = pthread_mutex_init(&m, &attr);
  pthread_mutexattr_destroy(&attr);
  if (r != 0) throw_errno("initializing a process-shared mutex failed", r);
}

lock_result lock_robust(pthread_mutex_t& m, Deadline deadline) {
  if (!deadline) return check_lock_result(m, pthread_mutex_lock(&m));
  timespec ts = to_timespec(*deadline);
  for (;;) {
    int r = pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &ts);
    if (r != EINTR) return check_lock_result(m, r);
  }
}

lock_result try_lock_robust(pthread_mutex_t& m) { return check_lock_result(m, pthread_mutex_trylock(&m)); }

bool unlock_robust(pthread_mutex_t& m) noexcept { return pthread_mutex_unlock(&m) == 0; }

bool futex_wait(FutexWord& word, std::uint32_t expected, Deadline deadline) {
  timespec ts{};
  timespec* abs = nullptr;
  if (deadline) {
    ts = to_timespec(*deadline);
    abs = &ts;
  }
  // No FUTEX_PRIVATE_FLAG: the word is shared between processes.
  long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_BITSET, expected, abs,
                     nullptr, FUTEX_BITSET_MATCH_ANY);
  return !(r == -1 && errno == ETIMEDOUT);
}

bool futex_wait_any(std::span<const FutexWatch> watches, Deadline deadline) {
  timespec ts{};
  timespec* abs = nullptr;
  if (deadline) {
    ts = to_timespec(*deadline);
    abs = &ts;
  }
#ifdef SYS_futex_waitv
  futex_waitv waiters[max_futex_watches]{};
  auto n = std::min(watches.size(), max_futex_watches);
  for (std::size_t i = 0; i < n; ++i) {
    waiters[i].val = watches[i].expected;
    waiters[i].uaddr = reinterpret_cast<std::uintptr_t>(watches[i].word);
    waiters[i].flags = FUTEX_32;  // not FUTEX_PRIVATE_FLAG: the words are shared between processes
  }
  long r = ::syscall(SYS_futex_waitv, waiters, static_cast<unsigned>(n), 0u, abs, CLOCK_MONOTONIC);
  if (r >= 0 || errno == EAGAIN || errno == EINTR) return true;
  if (errno == ETIMEDOUT) return false;
  // ENOSYS before Linux 5.16, EPERM under a seccomp filter that does not know the call
#endif
  return futex_wait(*watches.front().word, watches.front().expected, deadline);
}

void futex_wake(FutexWord& word, int count) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, count, nullptr, nullptr, 0);
}

}  // namespace multiproc::detail
