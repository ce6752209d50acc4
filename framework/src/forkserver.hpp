// Start method forkserver, as CPython's forkserver.py: a single-threaded server process, spawned
// at the first use and fed the children's work over a private socket, forks them. A fork from a
// small process that holds no other thread's locks is safe where a fork of a multi-threaded
// program is not, and as fast as a fork can be.
//
// The server forks with CLONE_PARENT, so every child is the owner's own child: the owner reaps it
// through its pidfd, sees its exit code and is its parent for getppid() too. The server watches
// the owner: when the owner ends it kills the children still running and ends. A server that died
// is replaced at the next start (children it had forked are unharmed: they are not its children).
#pragma once

#include "launch.hpp"
#include "multiproc/detail/reduction.hpp"

namespace multiproc::detail {

// Asks this process's fork server (started or replaced as needed) to fork who running target.
// OSError when no server can be started or it cannot fork.
Forked forkserver_child(const ChildIdentity& who, const SpawnTarget& target);
// A server already running is stopped (its children live on): the next start runs the new preload.
void set_forkserver_preload(void (*preload)());

} // namespace multiproc::detail
