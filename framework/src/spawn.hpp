// Start methods spawn and forkserver, the parts they share: a child's work as it travels (its
// identity, its logical parent, the function identities of its runner and target, the packed
// arguments and the number of descriptors that follow with SCM_RIGHTS), and the spawned child's
// side of mp::init. CPython's popen_spawn_posix.py and spawn.py are the model.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "function_id.hpp"
#include "launch.hpp"
#include "multiproc/detail/reduction.hpp"

namespace multiproc::detail {

struct ChildWork {
  std::string name;
  bool daemon = false;
  std::vector<int> identity;
  std::string parent_name;
  int parent_pid = 0;
  bool parent_daemon = false;
  int forker_tid = 0;  // the child dies with this thread of parent_pid (PR_SET_PDEATHSIG); 0: not tied
  FunctionId runner;
  FunctionId fn;
  std::string args;
  std::uint32_t nfds = 0;
  MSGPACK_DEFINE(name, daemon, identity, parent_name, parent_pid, parent_daemon, forker_tid, runner, fn, args, nfds)
};

// The work for who, running target, as seen from this process (its logical parent).
ChildWork make_work(const ChildIdentity& who, const SpawnTarget& target, pid_t forker_tid);
// One frame holding the work, then its descriptors (one byte carrying them), on a stream socket.
void send_work(int fd, const ChildWork& work, const std::vector<int>& fds);
struct ReceivedWork {
  ChildWork work;
  std::vector<int> fds;  // owned
};
// EOFError when the peer closed before a frame; Error on malformed input.
ReceivedWork receive_work(int fd);
// A work made ready to run: its functions found in this process and its arguments unpacked. The
// fork server prepares each work before it forks, so that its children start right at the call
// (every page a child touches first costs it a fault).
struct PreparedWork {
  ChildWork work;
  child_runner runner = nullptr;
  erased_fn fn = nullptr;
  msgpack::object_handle args;
  std::shared_ptr<ReceivedFds> fds;
};
// Error when a function's object is not loaded here or its build-id differs, or the arguments
// are not MessagePack.
PreparedWork prepare_work(ReceivedWork received);
// Runs the work as this process's whole life (the target under run_guarded, then the exit hooks);
// forked: the process is a fork (run the fork hooks, close the fork server's descriptors).
[[noreturn]] void run_work(PreparedWork& prepared, bool forked);

// Starts who as a fresh run of this program (/proc/self/exe, this process's argv) that receives
// its work over a private socket, and waits until its mp::init took it. tied: the child dies with
// the calling thread, as a forked one does. ProcessError when the child does not call mp::init
// within 10 s (it is killed and reaped); OSError when it cannot be spawned.
Forked spawn_child(const ChildIdentity& who, const SpawnTarget& target, bool tied = true);

// In a spawned child (called by mp::init): receives and runs the work; never returns. Does
// nothing in any other process.
void run_if_spawned();
// Whether this process was spawned by the library and has not reached mp::init: it must not
// start children (it would spawn itself again and again).
bool spawned_without_init();
// The argv given to mp::init (spawned children get the same); /proc/self/cmdline without it.
void remember_argv(int argc, char** argv);

} // namespace multiproc::detail
