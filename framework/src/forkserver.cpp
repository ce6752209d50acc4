#include "forkserver.hpp"

#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "log.hpp"
#include "multiproc/detail/wire.hpp"
#include "multiproc/errors.hpp"
#include "spawn.hpp"

namespace multiproc::detail {

namespace {

// ---- the owner's side ----------------------------------------------------------------------

struct Owner {
  std::mutex m;
  pid_t server_pid = 0;
  int server_pidfd = -1;
  int control = -1;  // our end of the server's socket; -1: no server
  void (*preload)() = nullptr;
};

Owner& owner() {
  static auto* o = new Owner;  // never destroyed: a child of ours may start one during exit
  return *o;
}

// A forked child has its own server (or none yet): the inherited descriptors are closed with the
// other internal ones, and the state is started afresh in place, since another thread of the
// parent may have held its mutex.
void forget_server_in_child() { new (&owner()) Owner; }

void serve(erased_fn preload, const msgpack::object& args, ReceivedFds& fds);

// Closing the socket ends the server, which first kills the children it forked that still run
// (as their owner's end would); grace bounds the wait before it is killed.
void stop_server(Owner& o, std::chrono::milliseconds grace = std::chrono::milliseconds(0)) {
  unregister_internal_fd(o.control);
  ::close(o.control);
  o.control = -1;
  if (!block_until_readable(o.server_pidfd, deadline_after(grace))) pidfd_send_signal(o.server_pidfd, SIGKILL);
  try_reap(o.server_pidfd, true);
  unregister_internal_fd(o.server_pidfd);
  ::close(o.server_pidfd);
  o.server_pidfd = -1;
}

// At exit, after the children were joined: the server leaves with us rather than after us.
void stop_server_at_exit() {
  auto& o = owner();
  std::lock_guard lock(o.m);
  if (o.control >= 0) stop_server(o, std::chrono::seconds(1));
}

void start_server(Owner& o) {
  static std::once_flag hooks;
  std::call_once(hooks, [] {
    on_fork_child(forget_server_in_child);
    at_process_exit(stop_server_at_exit, 20);
  });
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw OSError(std::string("socketpair failed: ") + std::strerror(errno), errno);
  SpawnTarget target{&serve, reinterpret_cast<erased_fn>(o.preload), encode(std::tuple<>{}), {sv[1]}};
  Forked server;
  try {
    server = spawn_child({"ForkServer", false, {}}, target, false);
  } catch (...) {
    ::close(sv[0]);
    ::close(sv[1]);
    throw;
  }
  ::close(sv[1]);
  register_internal_fd(sv[0]);
  o.server_pid = server.pid;
  o.server_pidfd = server.pidfd;
  o.control = sv[0];
}

// The server's answer to one request: the child's pid, or why it could not fork.
struct Reply {
  int pid = 0;
  std::string error;
  MSGPACK_DEFINE(pid, error)
};

Reply ask(const Owner& o, const ChildWork& work, const std::vector<int>& fds) {
  send_work(o.control, work, fds);
  return decode<Reply>(read_payload(o.control, read_frame_header(o.control)));
}

// ---- the server ----------------------------------------------------------------------------

// What the server needs to fork like glibc's fork() does for the fields a process relies on: the
// kernel writes the child's tid where glibc keeps it (mutexes record their owner from it), and
// the child registers glibc's robust-mutex list again (a fork clears it).
struct CloneContext {
  int* tid_address = nullptr;
  void* robust_head = nullptr;
  std::size_t robust_len = 0;
};

CloneContext clone_context() {
  CloneContext c;
  if (::prctl(PR_GET_TID_ADDRESS, &c.tid_address, 0, 0, 0) != 0 || c.tid_address == nullptr)
    throw OSError(std::string("the fork server cannot find its thread id (PR_GET_TID_ADDRESS): ") +
                      std::strerror(errno),
                  errno);
  ::syscall(SYS_get_robust_list, 0, &c.robust_head, &c.robust_len);
  return c;
}

// fork(), except that the child's parent is the server's parent (the owner).
pid_t fork_for_owner(const CloneContext& c) {
  long pid = ::syscall(SYS_clone, CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID, nullptr, nullptr,
                       c.tid_address, nullptr);
  if (pid == 0 && c.robust_head != nullptr) ::syscall(SYS_set_robust_list, c.robust_head, c.robust_len);
  return static_cast<pid_t>(pid);
}

struct Server {
  int control;
  int owner_pidfd;
  CloneContext clone;
  std::vector<int> children;  // pidfds of the children still running

  void watch(int fd) {
    register_internal_fd(fd);
    children.push_back(fd);
  }
  void forget(std::size_t i) {
    unregister_internal_fd(children[i]);
    ::close(children[i]);
    children.erase(children.begin() + static_cast<std::ptrdiff_t>(i));
  }
  // The owner is gone: so are its children, as if they had died with it (PR_SET_PDEATHSIG).
  void kill_children() {
    for (int fd : children) pidfd_send_signal(fd, SIGKILL);
  }

  // One request: fork the child, answer with its pid. false once the owner closed the socket.
  bool fork_one() {
    ReceivedWork received;
    try {
      received = receive_work(control);
    } catch (const EOFError&) {
      return false;
    }
    Reply reply;
    PreparedWork prepared;
    try {
      prepared = prepare_work(std::move(received));
    } catch (const Error& e) {
      reply.error = e.what();
      write_frame(control, encode(reply));
      return true;
    }
    pid_t pid = fork_for_owner(clone);
    if (pid == 0) run_work(prepared, true);
    prepared.fds.reset();  // the child has them now
    if (pid < 0) {
      reply.error = std::string("the fork server could not fork: ") + std::strerror(errno);
    } else {
      reply.pid = pid;
      int fd = pidfd_open(pid);
      if (fd >= 0) watch(fd);
    }
    write_frame(control, encode(reply));
    return true;
  }

  void run() {
    for (;;) {
      std::vector<pollfd> fds{{control, POLLIN, 0}, {owner_pidfd, POLLIN, 0}};
      for (int fd : children) fds.push_back({fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        throw OSError(std::string("poll failed: ") + std::strerror(errno), errno);
      }
      if (fds[1].revents) break;
      for (std::size_t i = fds.size(); i-- > 2;)
        if (fds[i].revents) forget(i - 2);
      if (fds[0].revents && !fork_one()) break;
    }
    kill_children();
  }
};

void serve(erased_fn preload, const msgpack::object&, ReceivedFds& fds) {
  pid_t owner_pid = ::getppid();
  Server server{fds.take(0), pidfd_open(owner_pid), clone_context(), {}};
  if (server.owner_pidfd < 0 || ::getppid() != owner_pid) return;  // the owner is already gone
  register_internal_fd(server.control);
  register_internal_fd(server.owner_pidfd);
  if (preload != nullptr) preload();
  server.run();
}

} // namespace

Forked forkserver_child(const ChildIdentity& who, const SpawnTarget& target) {
  auto work = make_work(who, target, 0);
  auto& o = owner();
  std::lock_guard lock(o.m);
  Reply reply;
  // A server that died (killed, or its owner thread's PR_SET_PDEATHSIG) is replaced, once.
  for (int attempt = 0;; ++attempt) {
    if (o.control < 0) start_server(o);
    try {
      reply = ask(o, work, target.fds);
      break;
    } catch (const Error&) {
      stop_server(o);
      if (attempt > 0) throw;
      log(LogLevel::info, "the fork server ended; starting another");
    }
  }
  if (reply.pid <= 0) throw OSError(reply.error.empty() ? "the fork server answered no pid" : reply.error, EAGAIN);
  int pidfd = pidfd_open(reply.pid);
  if (pidfd < 0) {
    int err = errno;
    ::kill(reply.pid, SIGKILL);
    ::waitpid(reply.pid, nullptr, 0);
    throw OSError(std::string("pidfd_open failed: ") + std::strerror(err), err);
  }
  register_internal_fd(pidfd);
  log(LogLevel::info, "started {} (pid {}) through the fork server", who.name, reply.pid);
  return {reply.pid, pidfd};
}

void set_forkserver_preload(void (*preload)()) {
  auto& o = owner();
  std::lock_guard lock(o.m);
  o.preload = preload;
  if (o.control >= 0) stop_server(o);  // the next start brings a server that ran this preload
}

} // namespace multiproc::detail
