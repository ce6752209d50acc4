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

namespace multiproc::actors {

// This process's actor system, started if nobody holds it. Thread-safe.
std::shared_ptr<caf::actor_system> acquire_system();

} // namespace multiproc::actors
