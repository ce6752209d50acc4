// The two building blocks of every process-shared object: robust process-shared pthread mutexes
// (a holder's death frees them) and futex waits on 32-bit words in shared memory.
//
// Waiting uses raw shared futexes on sequence words rather than process-shared condition
// variables: a process killed while waiting inside a glibc condvar can leave it wedged for
// everyone, while a sequence word holds no per-waiter state at all.
#pragma once

#include <pthread.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <span>

#include "multiproc/detail/wire.hpp"

namespace multiproc::detail {

enum class mutex_kind { normal, errorcheck };

// Initializes a robust, process-shared mutex in place (in shared memory).
void init_robust_mutex(pthread_mutex_t& m, mutex_kind kind);

enum class lock_result { acquired, timed_out, already_owned };
// Locks m until the deadline (nullopt: forever). A lock whose owner died is made consistent and
// taken. already_owned only for errorcheck mutexes the caller holds.
lock_result lock_robust(pthread_mutex_t& m, Deadline deadline);
lock_result try_lock_robust(pthread_mutex_t& m);
// Interprets what pthread_mutex_(try|clock)lock returned for m. Unexpected errors throw OSError.
lock_result check_lock_result(pthread_mutex_t& m, int error);
// false when the caller does not hold m.
bool unlock_robust(pthread_mutex_t& m) noexcept;

// RAII for a robust mutex taken without a deadline.
class RobustGuard {
public:
  explicit RobustGuard(pthread_mutex_t& m) : m_(m) { lock_robust(m_, std::nullopt); }
  ~RobustGuard() { unlock_robust(m_); }
  RobustGuard(const RobustGuard&) = delete;
  RobustGuard& operator=(const RobustGuard&) = delete;

private:
  pthread_mutex_t& m_;
};

using FutexWord = std::atomic<std::uint32_t>;
static_assert(sizeof(FutexWord) == 4 && FutexWord::is_always_lock_free);

// Sleeps while *word == expected, until woken or the deadline. false only on timeout; a return
// of true may be spurious, so callers re-check their condition.
bool futex_wait(FutexWord& word, std::uint32_t expected, Deadline deadline);
void futex_wake(FutexWord& word, int count = INT_MAX);

// One word of a wait on several, and the value it must still hold for the caller to sleep.
struct FutexWatch {
  FutexWord* word;
  std::uint32_t expected;
};
inline constexpr std::size_t max_futex_watches = 128;  // the kernel's FUTEX_WAITV_MAX
// futex_wait on up to max_futex_watches words at once: returns when any of them is woken or does
// not hold its expected value. Where futex_waitv is missing (Linux before 5.16) or refused (a
// seccomp filter), it sleeps on the first word only.
bool futex_wait_any(std::span<const FutexWatch> watches, Deadline deadline);

// The futex word of a robust mutex (kernel ABI: owner's thread id | FUTEX_WAITERS |
// FUTEX_OWNER_DIED). When the owner dies holding the mutex, the kernel clears the id, sets
// FUTEX_OWNER_DIED and, if FUTEX_WAITERS is set, wakes one waiter of the word: setting that bit
// and sleeping on the word is how a process waits for another to die.
inline FutexWord& robust_word(pthread_mutex_t& m) noexcept {
  static_assert(sizeof(m.__data.__lock) == sizeof(FutexWord));
  return *reinterpret_cast<FutexWord*>(&m.__data.__lock);
}

// A sequence word plus a count of sleepers, so that wakers skip the syscall when nobody sleeps.
// Waiter: `auto seq = c.prepare(); if (!condition) c.wait(seq, deadline); c.done();` — waker:
// change the condition, then c.notify(). seq_cst ordering makes the check-then-sleep race-free.
struct WaitChannel {
  FutexWord seq{0};
  std::atomic<std::uint32_t> sleepers{0};

  std::uint32_t prepare() noexcept {
    sleepers.fetch_add(1);
    return seq.load();
  }
  bool wait(std::uint32_t observed, Deadline deadline) { return futex_wait(seq, observed, deadline); }
  void done() noexcept { sleepers.fetch_sub(1); }
  void notify(int count = INT_MAX) {
    if (sleepers.load() == 0) return;
    seq.fetch_add(1);
    futex_wake(seq, count);
  }
};

// Waits on `channel` until try_claim() returns true (it may also take what it waited for, e.g.
// decrement a counter) or the deadline passes; then one last try decides the result.
template <class TryClaim>
bool wait_for_claim(WaitChannel& channel, TryClaim try_claim, Deadline deadline) {
  for (;;) {
    if (try_claim()) return true;
    auto observed = channel.prepare();
    if (try_claim()) {
      channel.done();
      return true;
    }
    bool woken = channel.wait(observed, deadline);
    channel.done();
    if (!woken) return try_claim();
  }
}

}  // namespace multiproc::detail
