// Synchronization primitives across processes — Python's multiprocessing.synchronize: Lock,
// RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier.
//
// Each object lives in shared memory (detail/shm.hpp), so a handle is a cheap copy and a copy
// passed to a Process (under any start method) or inherited by any forked child is the same object
// there; the kernel frees it when the last process holding it exits, and nothing appears in
// /dev/shm. Each object holds one descriptor (a memfd) per process that uses it; a Condition two.
// Locks are robust process-shared mutexes: when a holder dies (even by SIGKILL) the next acquirer
// gets the lock, with the protected data as the dead holder left it. Waiting is done on shared
// futex words, with a deadline on every blocking call: `acquire()` blocks, `acquire(timeout)`
// waits at most timeout (zero: just tries) and returns false when it could not.
// Lock, RLock, Semaphore and Condition meet the C++ Lockable requirements (std::lock_guard,
// std::unique_lock, std::scoped_lock). All methods are safe from any thread of any process.
// Misuse — releasing what the caller does not hold, over-releasing a BoundedSemaphore, waiting on
// or notifying a Condition without holding its lock — throws ValueError.
// A lock is owned by a thread: unlike Python's Lock, another thread cannot release it.
// Destructor: drops this handle only; the object lives on while any process holds a copy.
#pragma once

#include <pthread.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>

#include "multiproc/detail/reduction.hpp"
#include "multiproc/detail/wire.hpp"

namespace multiproc {

namespace detail {
struct LockState;
struct RLockState;
struct SemaphoreState;
struct ConditionState;
struct EventState;
struct BarrierState;
}  // namespace detail

class BoundedSemaphore;

// Timeout type of wait_for: any std::chrono duration converts to it.
using OptionalTimeout = std::optional<std::chrono::duration<double>>;

// Python's Lock: not reentrant (acquiring it again from the holder blocks until the timeout).
// acquire() and release() are inline: uncontended, they cost what the robust mutex costs.
class Lock {
public:
  Lock();
  void acquire() {
    if (int r = pthread_mutex_lock(mutex_)) after_failed_lock(r);
  }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire_until(detail::deadline_after(timeout));
  }
  bool try_acquire();
  // ValueError when the calling thread does not hold it.
  void release() {
    if (pthread_mutex_unlock(mutex_) != 0) throw_not_held();
  }
  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return try_acquire(); }
  // What the timed forms call: waits until the deadline (nullopt: forever).
  bool acquire_until(detail::Deadline deadline);

private:
  friend struct detail::reducer<Lock>;
  explicit Lock(std::shared_ptr<detail::LockState> state);
  void after_failed_lock(int error);  // a dead holder's lock is taken over; other errors throw
  [[noreturn]] static void throw_not_held();
  std::shared_ptr<detail::LockState> state_;
  pthread_mutex_t* mutex_;  // lives in state_'s mapping
};

// Python's RLock: its owner may acquire it again; each acquire needs a release.
class RLock {
public:
  RLock();
  void acquire() { acquire_until(std::nullopt); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire_until(detail::deadline_after(timeout));
  }
  bool try_acquire();
  void release();  // ValueError when the calling thread does not own it
  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return try_acquire(); }
  // What the timed forms call: waits until the deadline (nullopt: forever).
  bool acquire_until(detail::Deadline deadline);
  bool is_owned() const;  // whether the calling thread owns it

private:
  friend class Condition;
  friend struct detail::reducer<RLock>;
  explicit RLock(std::shared_ptr<detail::RLockState> state) : state_(std::move(state)) {}
  int release_all();         // drops every level the owner holds; returns how many
  void restore(int levels);  // takes the lock back with that many levels
  std::shared_ptr<detail::RLockState> state_;
};

// Python's Semaphore: a shared counter; acquire waits while it is zero.
class Semaphore {
public:
  explicit Semaphore(int value = 1);
  void acquire() { acquire_until(std::nullopt); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire_until(detail::deadline_after(timeout));
  }
  bool try_acquire();
  void release();
  int get_value() const;
  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return try_acquire(); }
  // What the timed forms call: waits until the deadline (nullopt: forever).
  bool acquire_until(detail::Deadline deadline);

protected:
  Semaphore(int value, int bound);
  explicit Semaphore(std::shared_ptr<detail::SemaphoreState> state) : state_(std::move(state)) {}

private:
  friend struct detail::reducer<Semaphore>;
  friend struct detail::reducer<BoundedSemaphore>;
  std::shared_ptr<detail::SemaphoreState> state_;
};

// Python's BoundedSemaphore: release above the initial value throws ValueError.
class BoundedSemaphore : public Semaphore {
public:
  explicit BoundedSemaphore(int value = 1) : Semaphore(value, value) {}

private:
  friend struct detail::reducer<BoundedSemaphore>;
  explicit BoundedSemaphore(std::shared_ptr<detail::SemaphoreState> state) : Semaphore(std::move(state)) {}
};

// Python's Condition over an RLock (a fresh one by default). wait() releases every recursion
// level of the lock while it sleeps and restores them before it returns, as Python does.
// notify(n) wakes up to n of the waiters that were waiting when it was called, never a wait that
// starts after it. As in CPython, a waiter killed inside wait() may still be chosen (that
// wake-up is lost with it); it never wakes anyone else.
class Condition {
public:
  explicit Condition(std::optional<RLock> lock = {});
  void acquire() { lock_.acquire(); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return lock_.acquire(timeout);
  }
  void release() { lock_.release(); }
  void lock() { lock_.acquire(); }
  void unlock() { lock_.release(); }
  bool try_lock() { return lock_.try_acquire(); }

  // Waits for a notify (the caller must hold the lock: ValueError otherwise). The timed form
  // returns true when notified, false on timeout. wait_for() re-checks a predicate, since what
  // was notified may have changed again before this waiter holds the lock.
  void wait() { wait_until(std::nullopt); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::deadline_after(timeout));
  }
  // Waits until pred() holds or the timeout passes; returns the last value of pred().
  template <class Pred>
  bool wait_for(Pred pred, OptionalTimeout timeout = {}) {
    detail::Deadline deadline;
    if (timeout) deadline = detail::deadline_after(*timeout);
    bool result = pred();
    while (!result) {
      if (deadline && detail::Clock::now() >= *deadline) break;
      wait_until(deadline);
      result = pred();
    }
    return result;
  }
  // Wakes up to n waiters (all of them). The caller must hold the lock: ValueError otherwise.
  void notify(int n = 1);
  void notify_all();
  // What the timed forms call: waits until the deadline (nullopt: forever).
  bool wait_until(detail::Deadline deadline);

private:
  friend struct detail::reducer<Condition>;
  Condition(RLock lock, std::shared_ptr<detail::ConditionState> state)
      : lock_(std::move(lock)), state_(std::move(state)) {}
  RLock lock_;
  std::shared_ptr<detail::ConditionState> state_;
};

// Python's Event: a flag that wait() waits for.
class Event {
public:
  Event();
  void set();
  void clear();
  bool is_set() const;
  void wait() { wait_until(std::nullopt); }
  // true when the flag is set (at once or within timeout).
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::deadline_after(timeout));
  }
  // What the timed forms call: waits until the deadline (nullopt: forever).
  bool wait_until(detail::Deadline deadline);

private:
  friend struct detail::reducer<Event>;
  explicit Event(std::shared_ptr<detail::EventState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::EventState> state_;
};

// Python's Barrier: `parties` waiters meet, then all go on. wait() returns a distinct index in
// [0, parties); the last to arrive runs `action` first. A timeout, abort(), an action that
// throws, or a party that dies inside wait() (even by SIGKILL) breaks the barrier: every waiter,
// current and future, gets BrokenBarrierError until reset(). A party that dies after the round
// released it no longer counts. The action is a copy in each process: it runs in whichever
// process arrives last. (Waiters learn of a death at once where the kernel has futex_waitv,
// Linux 5.16 and later; elsewhere at the next arrival, reset() or timeout.)
class Barrier {
public:
  Barrier(int parties, std::function<void()> action = {}, OptionalTimeout timeout = {});
  int wait();  // with the default timeout given at construction
  template <class Rep, class Period>
  int wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::deadline_after(timeout));
  }
  void reset();
  void abort();
  int parties() const { return parties_; }
  int n_waiting() const;
  bool broken() const;
  // What the timed forms call: waits until the deadline (nullopt: forever).
  int wait_until(detail::Deadline deadline);

private:
  friend struct detail::reducer<Barrier>;
  Barrier(int parties, std::function<void()> action, OptionalTimeout timeout,
          std::shared_ptr<detail::BarrierState> state);
  void release_all_waiting();
  void wait_for_release(int own_slot, detail::Deadline deadline);
  int parties_;
  std::function<void()> action_;
  OptionalTimeout timeout_;
  std::shared_ptr<detail::BarrierState> state_;
};

namespace detail {
// Each primitive crosses into a spawn or forkserver child as its shared memory (reducer bodies in
// synchronize.cpp). A Barrier's action crosses only as a plain function pointer (for a captureless
// lambda: +[] { ... }); any other action is a ValueError from start().
#define MULTIPROC_SYNC_REDUCER(H)                                                          \
  template <>                                                                              \
  struct reducer<H> {                                                                      \
    static void reduce(const H& h, msgpack::packer<Buffer>& pk, Reduction& r);             \
    static H rebuild(const msgpack::object& o, ReceivedFds& fds);                          \
  };
MULTIPROC_SYNC_REDUCER(Lock)
MULTIPROC_SYNC_REDUCER(RLock)
MULTIPROC_SYNC_REDUCER(Semaphore)
MULTIPROC_SYNC_REDUCER(BoundedSemaphore)
MULTIPROC_SYNC_REDUCER(Condition)
MULTIPROC_SYNC_REDUCER(Event)
MULTIPROC_SYNC_REDUCER(Barrier)
#undef MULTIPROC_SYNC_REDUCER
}  // namespace detail

}  // namespace multiproc
