#include "launch.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stdio_ext.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <streambuf>

#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/manager_client.hpp"
#include "multiproc/errors.hpp"
#include "forkserver.hpp"
#include "log.hpp"
#include "spawn.hpp"

namespace multiproc::detail {

namespace {

struct Self {
  ChildIdentity who{"MainProcess", false, {}};
  int child_counter = 0;
  std::optional<ProcessInfo> parent;
};

struct Registry {
  std::mutex m;
  std::unique_ptr<Self> self = std::make_unique<Self>();
  std::set<int> internal_fds;
  std::vector<void (*)()> fork_hooks;
  std::multimap<int, void (*)()> exit_hooks;
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

// The child's Self is built by the parent before the fork (child_self): the child only swaps the
// pointers, so that it allocates and copies nothing. Every page a child writes costs it a fault
// and a copy, every page of code it runs first a fault: malloc alone writes the arena and the
// heap and runs code from three libraries (bench/RESULTS.md, process_start_join).
void adopt_identity(std::unique_ptr<Self>& child_self) {
  auto& r = reg();
  r.self.swap(child_self);
  r.exit_hooks_ran = false;
}

// The child's whole life: it never returns into the caller's stack. forked: the process is a copy
// of its parent (run the fork hooks) rather than a fresh program.
[[noreturn]] void child_main(std::unique_ptr<Self>& child_self, bool forked, const std::function<int()>& body,
                             const std::vector<int>& keep_fds) noexcept {
  adopt_identity(child_self);
  ::on_exit(exit_from_child, nullptr);
  close_internal_fds_except(keep_fds);
  int code = 0;
  int failed = run_guarded([&] {
    if (forked)
      for (auto hook : reg().fork_hooks) hook();
    code = body();
  });
  finish_child(failed ? failed : code);
}

} // namespace

namespace {

// A C++ standard stream holds output in its stream buffer's put area: none while it is synced
// with stdio (the default: each write goes straight on to stdout's FILE), a filebuf's after
// sync_with_stdio(false). Reading the put area writes nothing, where flush() would lock, touch
// the stream and the FILE, and run code from pages the child has not touched yet: each of those
// pages is one more page fault per child (bench/RESULTS.md, process_start_join).
template <class Char>
struct PutArea : std::basic_streambuf<Char> {
  static bool pending(const std::basic_ostream<Char>& stream) {
    const std::basic_streambuf<Char>* buf = stream.rdbuf();
    return buf != nullptr && (buf->*&PutArea::pptr)() != (buf->*&PutArea::pbase)();
  }
};

template <class Char>
void flush_if_pending(std::basic_ostream<Char>& stream) {
  if (PutArea<Char>::pending(stream)) stream.flush();
}

void flush_if_pending(std::FILE* file) {
  if (::__fpending(file) > 0) std::fflush(file);
}

} // namespace

void flush_std_streams() {
  flush_if_pending(std::cout);
  flush_if_pending(std::cerr);
  flush_if_pending(std::clog);
  flush_if_pending(std::wcout);
  flush_if_pending(std::wcerr);
  flush_if_pending(std::wclog);
  flush_if_pending(stdout);
  flush_if_pending(stderr);
}

// PR_SET_PDEATHSIG fires when the *thread* that forked us ends (for the main thread: when the
// parent process ends). Whatever ended before prctl took effect is checked by hand, so that the
// child dies the same way however the race went.
void die_with_forking_thread(pid_t parent_pid, pid_t forker_tid) noexcept {
  // Through syscall(), whose page of code tgkill below needs anyway: one page fault less.
  ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent_pid || ::syscall(SYS_tgkill, parent_pid, forker_tid, 0) != 0) ::raise(SIGKILL);
}

void become_child(const ChildIdentity& who, const ProcessInfo& parent, bool forked,
                  const std::function<int()>& body) {
  auto child_self = std::make_unique<Self>(Self{who, 0, parent});
  child_main(child_self, forked, body, {});
}

namespace {

// This process's thread count: field 20 of /proc/self/stat (the name in field 2 may hold spaces
// and parentheses, so counting starts after its last ')').
long thread_count() {
  int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 1;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return 1;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  for (int field = 2; p != nullptr && field < 20; ++field) p = std::strchr(p + 1, ' ');
  return p ? std::strtol(p + 1, nullptr, 10) : 1;
}

std::atomic<bool> g_warned_threaded_fork{false};

} // namespace

void warn_if_threaded_fork() {
  if (g_warned_threaded_fork.load(std::memory_order_relaxed) || thread_count() <= 1) return;
  if (g_warned_threaded_fork.exchange(true)) return;
  log(LogLevel::warning,
      "this process (pid {}) is multi-threaded: a child started by fork may inherit a lock another thread "
      "held and deadlock; StartMethod::forkserver (or spawn) is safe",
      ::getpid());
}

Forked start_child(StartMethod method, const ChildIdentity& who, const std::function<int()>& fork_body,
                   const std::function<SpawnTarget()>& spawn_target, const std::vector<int>& keep_fds) {
  switch (method) {
  case StartMethod::spawn: return spawn_child(who, spawn_target());
  case StartMethod::forkserver: return forkserver_child(who, spawn_target());
  case StartMethod::fork: break;
  }
  warn_if_threaded_fork();
  return fork_child(who, fork_body, keep_fds);
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
    std::cerr << "Process " << reg().self->who.name << ":\n"
              << demangle(typeid(e).name()) << ": " << e.what() << std::endl;
  } catch (...) {
    flush_std_streams();
    std::cerr << "Process " << reg().self->who.name << ":\nan exception of unknown type" << std::endl;
  }
  return 1;
}

Forked fork_child(const ChildIdentity& who, const std::function<int()>& body, const std::vector<int>& keep_fds) {
  flush_std_streams();
  auto& r = reg();
  pid_t parent_pid = ::getpid();
  pid_t forker_tid = ::gettid();
  auto child_self = std::make_unique<Self>(Self{who, 0, {}});
  InheritedReferences inherited;  // the manager proxies the child inherits stay alive for it
  pid_t pid;
  {
    // Held across fork so that no other thread leaves the registry locked (or half-updated) in
    // the child; the child's copy is unlocked when this guard goes out of scope there.
    std::lock_guard lock(r.m);
    child_self->parent = ProcessInfo{r.self->who.name, parent_pid, r.self->who.daemon};
    pid = ::fork();
  }
  if (pid < 0) throw OSError(std::string("fork failed: ") + std::strerror(errno), errno);
  if (pid == 0) {
    inherited.in_child();
    die_with_forking_thread(parent_pid, forker_tid);
    child_main(child_self, true, body, keep_fds);
  }
  int fd = pidfd_open(pid);
  if (fd < 0) {
    int err = errno;
    // ESRCH: SIGCHLD is ignored and the child already ended and was reaped by the kernel; its
    // pid may be reused, so it must not be signalled. Otherwise the child is ours and unreaped.
    if (err != ESRCH) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
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

void on_fork_child(void (*hook)()) {
  std::lock_guard lock(reg().m);
  reg().fork_hooks.push_back(hook);
}

void at_process_exit(void (*hook)(), int priority) {
  std::lock_guard lock(reg().m);
  auto& r = reg();
  r.exit_hooks.emplace(priority, hook);
  if (!r.atexit_registered && r.self->who.identity.empty()) {
    std::atexit(main_atexit);
    r.atexit_registered = true;
  }
}

void run_process_exit_hooks() {
  auto& r = reg();
  std::unique_lock lock(r.m);
  if (r.exit_hooks_ran) return;
  r.exit_hooks_ran = true;
  // Hooks run unlocked (they may register more, which run in their turn). Hooks are never
  // removed and multimap nodes never move, so the iterator stays valid meanwhile.
  for (auto it = r.exit_hooks.begin(); it != r.exit_hooks.end(); ++it) {
    auto hook = it->second;
    lock.unlock();
    hook();
    lock.lock();
  }
}

std::vector<int> next_child_identity() {
  std::lock_guard lock(reg().m);
  auto id = reg().self->who.identity;
  id.push_back(++reg().self->child_counter);
  return id;
}

void take_back_child_identity(const std::vector<int>& identity) {
  std::lock_guard lock(reg().m);
  auto& self = *reg().self;
  if (!identity.empty() && identity.back() == self.child_counter &&
      identity.size() == self.who.identity.size() + 1)
    --self.child_counter;
}

std::vector<int> self_identity() {
  std::lock_guard lock(reg().m);
  return reg().self->who.identity;
}

ProcessInfo self_info() {
  std::lock_guard lock(reg().m);
  return {reg().self->who.name, ::getpid(), reg().self->who.daemon};
}
std::optional<ProcessInfo> parent_info() {
  std::lock_guard lock(reg().m);
  return reg().self->parent;
}
void set_self_name(std::string name) {
  std::lock_guard lock(reg().m);
  reg().self->who.name = std::move(name);
}

} // namespace multiproc::detail
