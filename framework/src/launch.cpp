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

[[noreturn]] void child_main(const ChildIdentity& who, pid_t parent_pid, const ProcessInfo& parent,
                             const std::function<int()>& body, const std::vector<int>& keep_fds) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent_pid) ::_exit(1);  // the parent died before prctl took effect
  auto& r = reg();
  r.self.who = who;
  r.self.pid = ::getpid();
  r.self.child_counter = 0;
  r.self.parent = parent;
  r.exit_hooks_ran = false;
  close_internal_fds_except(keep_fds);
  for (auto& hook : r.fork_hooks) hook();
  int code = body();
  try {
    run_process_exit_hooks();
  } catch (...) {
    code = code ? code : 1;
  }
  flush_std_streams();
  ::_exit(code);
}

} // namespace

void flush_std_streams() {
  std::cout.flush();
  std::cerr.flush();
  std::clog.flush();
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
  ProcessInfo me{r.self.who.name, ::getpid(), r.self.who.daemon};
  pid_t parent_pid = ::getpid();
  pid_t pid;
  {
    // Held across fork so that no other thread leaves it locked in the child.
    std::lock_guard lock(r.m);
    pid = ::fork();
  }
  if (pid < 0) throw OSError(std::string("fork failed: ") + std::strerror(errno), errno);
  if (pid == 0) child_main(who, parent_pid, me, body, keep_fds);
  int fd = pidfd_open(pid);
  if (fd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw OSError(std::string("pidfd_open failed: ") + std::strerror(err), err);
  }
  register_internal_fd(fd);
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
