#include "launch.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <set>

#include "multiproc/detail/codec.hpp"
#include "multiproc/errors.hpp"
#include "log.hpp"

namespace multiproc::detail {

namespace {

struct Self {
  ChildIdentity who{"MainProcess", false, {}};
  pid_t pid = ::getpid();
  int child_counter = 0;
  std::optional<ProcessInfo> parent;
};

struct Registry {
  std::mutex m;
  Self self;
  std::set<int> internal_fds;
  std::vector<std::function<void()>> fork_hooks;
  std::multimap<int, std::function<void()>> exit_hooks;
  bool atexit_registered = false;
  bool exit_hooks_ran = false;
};

Registry& reg() {
  static auto* r = new Registry;  // never destroyed: used from atexit and from children
  return *r;
}

void main_atexit() { run_process_exit_hooks(); }

void close_internal_fds_except(const std::vector<int>& keep) {
  for (int fd : reg().internal_fds)
    if (std::find(keep.begin(), keep.end(), fd) == keep.end()) ::close(fd);
  reg().internal_fds.clear();
  for (int fd : keep) reg().internal_fds.insert(fd);
}

[[noreturn]] void finish_child(int code) noexcept {
  try {
    run_process_exit_hooks();
  } catch (...) {
    code = code ? code : 1;
  }
  flush_std_streams();
  ::_exit(code);
}

// Registered in every child right after fork. exit() runs handlers in reverse registration
// order, so when user code in a child calls std::exit(n) this runs before every atexit handler
// and static destructor inherited from the parent, and ends the child as SystemExit{n} would.
void exit_from_child(int status, void*) { finish_child(status); }

void adopt_identity(const ChildIdentity& who, const ProcessInfo& parent) {
  auto& r = reg();
  r.self.who = who;
  r.self.pid = ::getpid();
  r.self.child_counter = 0;
  r.self.parent = parent;
  r.exit_hooks_ran = false;
}

// PR_SET_PDEATHSIG fires when the *thread* that forked us ends (for the main thread: when the
// parent process ends). Whatever ended before prctl took effect is checked by hand, so that the
// child dies the same way however the race went.
void die_with_forking_thread(pid_t parent_pid, pid_t forker_tid) noexcept {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent_pid || ::syscall(SYS_tgkill, parent_pid, forker_tid, 0) != 0) ::raise(SIGKILL);
}

// The child's whole life: it never returns into the caller's stack.
[[noreturn]] void child_main(const ChildIdentity& who, pid_t parent_pid, pid_t forker_tid,
                             const ProcessInfo& parent, const std::function<int()>& body,
                             const std::vector<int>& keep_fds) noexcept {
  die_with_forking_thread(parent_pid, forker_tid);
  adopt_identity(who, parent);
  ::on_exit(exit_from_child, nullptr);
  close_internal_fds_except(keep_fds);
  int code = 0;
  int failed = run_guarded([&] {
    for (auto& hook : reg().fork_hooks) hook();
    code = body();
  });
  finish_child(failed ? failed : code);
}

} // namespace

void flush_std_streams() {
  std::cout.flush();
  std::cerr.flush();
  std::clog.flush();
  std::wcout.flush();
  std::wcerr.flush();
  std::wclog.flush();
  std::fflush(nullptr);
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

std::optional<int> try_reap(int pidfd, bool block) {
  siginfo_t info{};
  for (;;) {
    int r = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                     WEXITED | (block ? 0 : WNOHANG));
    if (r == 0) break;
    if (errno == EINTR) continue;
    // ECHILD: someone else (a stray waitpid(-1)) reaped it; the status is gone.
    if (errno == ECHILD) return 255;
    throw OSError(std::string("waitid failed: ") + std::strerror(errno), errno);
  }
  if (info.si_pid == 0) return std::nullopt;
  if (info.si_code == CLD_EXITED) return info.si_status;
  return -info.si_status;
}

int run_guarded(const std::function<void()>& body) {
  try {
    body();
    return 0;
  } catch (const SystemExit& e) {
    return e.code;
  } catch (const std::exception& e) {
    flush_std_streams();
    std::cerr << "Process " << reg().self.who.name << ":\n"
              << demangle(typeid(e).name()) << ": " << e.what() << std::endl;
  } catch (...) {
    flush_std_streams();
    std::cerr << "Process " << reg().self.who.name << ":\nan exception of unknown type" << std::endl;
  }
  return 1;
}

Forked fork_child(const ChildIdentity& who, const std::function<int()>& body, const std::vector<int>& keep_fds) {
  flush_std_streams();
  auto& r = reg();
  pid_t parent_pid = ::getpid();
  pid_t forker_tid = ::gettid();
  ProcessInfo me;
  pid_t pid;
  {
    // Held across fork so that no other thread leaves the registry locked (or half-updated) in
    // the child; the child's copy is unlocked when this guard goes out of scope there.
    std::lock_guard lock(r.m);
    me = {r.self.who.name, parent_pid, r.self.who.daemon};
    pid = ::fork();
  }
  if (pid < 0) throw OSError(std::string("fork failed: ") + std::strerror(errno), errno);
  if (pid == 0) child_main(who, parent_pid, forker_tid, me, body, keep_fds);
  int fd = pidfd_open(pid);
  if (fd < 0) {
    int err = errno;
    // ESRCH: SIGCHLD is ignored and the child already ended and was reaped by the kernel; its
    // pid may be reused, so it must not be signalled. Otherwise the child is ours and unreaped.
    if (err != ESRCH) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    throw OSError(std::string("pidfd_open failed: ") + std::strerror(err), err);
  }
  register_internal_fd(fd);
  log(LogLevel::info, "started {} (pid {})", who.name, pid);
  return {pid, fd};
}

void register_internal_fd(int fd) {
  std::lock_guard lock(reg().m);
  reg().internal_fds.insert(fd);
}
void unregister_internal_fd(int fd) {
  std::lock_guard lock(reg().m);
  reg().internal_fds.erase(fd);
}

void on_fork_child(std::function<void()> hook) {
  std::lock_guard lock(reg().m);
  reg().fork_hooks.push_back(std::move(hook));
}

void at_process_exit(std::function<void()> hook, int priority) {
  std::lock_guard lock(reg().m);
  auto& r = reg();
  r.exit_hooks.emplace(priority, std::move(hook));
  if (!r.atexit_registered && r.self.who.identity.empty()) {
    std::atexit(main_atexit);
    r.atexit_registered = true;
  }
}

void run_process_exit_hooks() {
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard lock(reg().m);
    if (reg().exit_hooks_ran) return;
    reg().exit_hooks_ran = true;
    for (auto& [prio, h] : reg().exit_hooks) hooks.push_back(h);
  }
  for (auto& h : hooks) h();
}

std::vector<int> next_child_identity() {
  std::lock_guard lock(reg().m);
  auto id = reg().self.who.identity;
  id.push_back(++reg().self.child_counter);
  return id;
}

ProcessInfo self_info() {
  std::lock_guard lock(reg().m);
  return {reg().self.who.name, ::getpid(), reg().self.who.daemon};
}
std::optional<ProcessInfo> parent_info() {
  std::lock_guard lock(reg().m);
  return reg().self.parent;
}
void set_self_name(std::string name) {
  std::lock_guard lock(reg().m);
  reg().self.who.name = std::move(name);
}

} // namespace multiproc::detail
