// The process's CAF actor_system: one per process at a time, created when first needed with
// the settings notes/caf-0.17.md recommends (work-sharing scheduler, two threads, middleman
// without extra workers), and stopped when its last holder lets go.
//
// Not stopped from atexit: CAF 0.17.6 crashes (heap corruption in ~actor_system) when a system
// with a middleman is destroyed after exit() has run the main thread's thread_local destructors,
// which happens before every atexit handler. Holders release it while the process still runs.
// A forked child never touches the system it inherited (its threads do not exist there); it
// gets a fresh one if it asks. ~actor_system waits for every actor: stop yours before you let go,
// and never let the last reference go on a CAF thread.
#pragma once

#include <memory>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

namespace multiproc::actors {

// This process's actor system, started if nobody holds it. OSError when the process cannot start
// its threads (startable()). Thread-safe.
std::shared_ptr<caf::actor_system> acquire_system();

// Returns cfg once this process has shown it can start every thread an actor_system built from
// cfg starts, and `more` threads besides; OSError (EAGAIN) when it cannot. Build every system as
// `caf::actor_system sys{startable(cfg)}`: CAF 0.17.6 cannot survive a thread that fails to
// start. Its constructor throws, and the unwinding either blocks forever in
// pthread_cond_destroy (the scheduler threads already started wait on that condition) or aborts
// (a joinable std::thread destroyed). A thread limit (RLIMIT_NPROC, a cgroup's pids.max) must be
// found out before the system is built.
caf::actor_system_config& startable(caf::actor_system_config& cfg, std::size_t more = 0);

// CAF 0.17.6 keeps a reference to the system's logger in a thread_local of each thread that
// spawned an actor (a scoped_actor too), and ~actor_system waits until every such reference is
// gone: a user's thread that kept one while it lives would block the system's end for good when
// another thread ends it (Pool::join on a std::async thread). Every call from a user's thread
// that spawns drops its thread's reference when it is done: call this at its end, or declare a
// UserThreadCall before the spawn.
void release_thread_logger();
class UserThreadCall {
public:
  UserThreadCall() = default;
  UserThreadCall(const UserThreadCall&) = delete;
  UserThreadCall& operator=(const UserThreadCall&) = delete;
  ~UserThreadCall() { release_thread_logger(); }
};

} // namespace multiproc::actors
