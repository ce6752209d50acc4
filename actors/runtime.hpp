// The process's CAF actor_system: one per process, created on first use with the settings
// notes/caf-0.17.md recommends (work-sharing scheduler, two threads, middleman without extra
// workers). A forked child never touches the system it inherited (its threads do not exist
// there); it gets a fresh one if it asks. The system is stopped when the process ends normally,
// after the library's exit hooks joined children; every actor the library spawns must be gone
// by then, because ~actor_system waits for all of them.
#pragma once

#include <caf/actor_system.hpp>

namespace multiproc::actors {

// This process's actor system. Thread-safe.
caf::actor_system& system();

} // namespace multiproc::actors
