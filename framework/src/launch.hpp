// Starting children the way every part of the library needs it (Process, Pool workers, the
// Manager's server), by any start method: flush first, keep the child tied to its parent, close
// the library's internal descriptors, never return into the caller's stack, leave with _exit.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "multiproc/detail/reduction.hpp"
#include "multiproc/process.hpp"

namespace multiproc::detail {

struct Forked {
  pid_t pid;
  int pidfd;  // O_CLOEXEC; readable once the child ended; registered as internal
};

struct ChildIdentity {
  std::string name;
  bool daemon = false;
  std::vector<int> identity;  // Python's _identity: (1,), (1, 2), ...
};

// Forks a child that adopts `who`, runs the fork hooks and body, then the exit hooks, and
// _exits with body's result (exceptions map to exit codes as Process documents; std::exit(n)
// called in the child ends it the same way, skipping the parent's atexit handlers and static
// destructors). keep_fds: internal fds the child still needs (its own socket).
// The child gets SIGKILL when the calling *thread* ends (PR_SET_PDEATHSIG): fork from a thread
// that lives at least as long as the child should. Thread-safe.
Forked fork_child(const ChildIdentity& who, const std::function<int()>& body,
                  const std::vector<int>& keep_fds = {});

// Starts who by method: fork runs fork_body in a forked child (as fork_child); spawn and
// forkserver run spawn_target() (which may throw ValueError before anything starts) in a spawned
// child or one forked by the fork server. In every case the caller's process is the OS parent,
// reaps the child through the pidfd and is its logical parent (parent_process()).
Forked start_child(StartMethod method, const ChildIdentity& who, const std::function<int()>& fork_body,
                   const std::function<SpawnTarget()>& spawn_target, const std::vector<int>& keep_fds = {});

// The life of a child that fork_child did not fork (spawned, or forked by the fork server): takes
// who and its logical parent as its identity, runs body as fork_child's children do and _exits.
// forked: run the fork hooks first.
[[noreturn]] void become_child(const ChildIdentity& who, const ProcessInfo& parent, bool forked,
                               const std::function<int()>& body);
// PR_SET_PDEATHSIG on forker_tid of parent_pid, checked by hand for the race before it took effect.
void die_with_forking_thread(pid_t parent_pid, pid_t forker_tid) noexcept;
// Under fork, the first start in a process with more than one thread logs one warning naming
// forkserver (CPython 3.12).
void warn_if_threaded_fork();

// Runs body as a child's top frame: SystemExit -> its code, an exception -> 1 with
// "Process <name>:" and the error on stderr.
int run_guarded(const std::function<void()>& body);

// Descriptors of the library (pidfds, pool and manager sockets) that no other child needs: every
// forked child closes them, so peers see EOF when their real owner goes.
void register_internal_fd(int fd);
void unregister_internal_fd(int fd);

// Hooks run in a freshly forked child before its body (reset per-process state), and when a
// child or the main process ends normally (flush queues). Thread-safe; run in registration order.
void on_fork_child(void (*hook)());
// Exit hooks run lowest priority first: queues flush (0) before children are joined (10).
void at_process_exit(void (*hook)(), int priority = 0);
void run_process_exit_hooks();

// This process's next child identity (Python's _identity + (counter,)).
std::vector<int> next_child_identity();
// Gives back the identity next_child_identity just issued, for an object that names no child.
void take_back_child_identity(const std::vector<int>& identity);
std::vector<int> self_identity();  // this process's own, {} in the main process
// pidfd helpers (glibc 2.36's <sys/pidfd.h> does not link from C++).
int pidfd_open(pid_t pid);
int pidfd_send_signal(int pidfd, int sig);
// Reaps the child behind pidfd if it ended: its Python-style exit code, else nullopt.
std::optional<int> try_reap(int pidfd, bool block);
ProcessInfo self_info();
std::optional<ProcessInfo> parent_info();
void set_self_name(std::string name);
// Flushes the C and C++ standard streams that hold output (before fork, and before a child
// exits), as Python flushes sys.stdout and sys.stderr; other FILEs are the program's to flush.
void flush_std_streams();

} // namespace multiproc::detail
