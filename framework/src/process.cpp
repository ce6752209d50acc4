#include "multiproc/process.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <typeinfo>

#include "forkserver.hpp"
#include "launch.hpp"
#include "node.hpp"
#include "spawn.hpp"
#include "log.hpp"
#include "multiproc/detail/wire.hpp"
#include "multiproc/errors.hpp"

namespace multiproc {

namespace detail {

struct ProcessState {
  mutable std::mutex m;
  std::string name;
  bool daemon = false;
  std::optional<StartMethod> start_method;
  std::vector<int> identity;
  // Only the process that created the object may start it, wait for it or signal it: in a
  // forked child the inherited copy describes a sibling (or the child itself).
  pid_t creator = ::getpid();
  bool started = false;
  bool is_current = false;  // the child's own copy, inside that child
  pid_t pid = 0;
  int pidfd = -1;
  std::optional<int> exitcode;
  bool closed = false;

  ProcessState() = default;
  ProcessState(const ProcessState&) = delete;
  ProcessState& operator=(const ProcessState&) = delete;
  ~ProcessState() { release_pidfd(); }

  bool ours() const { return creator == ::getpid(); }

  void release_pidfd() {
    // A forked child already closed its inherited copy of the pidfd, and the number may since
    // have been reused for another descriptor: only the creator closes it.
    if (pidfd >= 0 && ours()) {
      unregister_internal_fd(pidfd);
      ::close(pidfd);
    }
    pidfd = -1;
  }

  // Collects the exit code if the child ended. The caller holds m; block only once the pidfd
  // is readable (the child has ended), so that m is never held across a real wait.
  bool reap(bool block) {
    if (exitcode) return true;
    if (pidfd < 0 || !ours()) return false;
    exitcode = try_reap(pidfd, block);
    if (exitcode) log(LogLevel::info, "{} (pid {}) exited with exitcode {}", name, pid, *exitcode);
    return exitcode.has_value();
  }
};

namespace {

// How long a daemonic child gets to act on SIGTERM at exit before it is killed.
constexpr std::chrono::seconds daemon_grace{1};

// Children started by this process and not yet reaped: for active_children() and the exit
// function, and so that an unjoined child whose Process object is gone is still reaped.
struct Children {
  std::mutex m;
  std::vector<std::shared_ptr<ProcessState>> live;
};

Children& children() {
  static auto* c = new Children;  // never destroyed: used from atexit
  return *c;
}

// The inherited registry lists the parent's children, and another parent thread may have held
// its mutex at fork time: a child abandons its contents (without destroying them) and starts a
// fresh registry in the same place, which allocates nothing (launch.cpp, adopt_identity).
void forget_children_in_child() { new (&children()) Children; }

// Reaps every child that ended; the ones still running.
std::vector<std::shared_ptr<ProcessState>> reap_finished() {
  auto& c = children();
  std::lock_guard lock(c.m);
  std::erase_if(c.live, [](const std::shared_ptr<ProcessState>& s) {
    std::lock_guard sl(s->m);
    return s->reap(false);
  });
  return c.live;
}

// Waits without holding s.m (other threads may query the process meanwhile) until the child
// ended or the deadline passed; true once it is reaped.
bool wait_for_exit(ProcessState& s, Deadline deadline) {
  int fd;
  {
    std::lock_guard lock(s.m);
    if (s.exitcode) return true;
    fd = s.pidfd;
  }
  if (!block_until_readable(fd, deadline)) return false;
  std::lock_guard lock(s.m);
  return s.reap(true);
}

void signal_child(ProcessState& s, int sig) {
  std::lock_guard lock(s.m);
  if (!s.ours() || s.pidfd < 0 || s.reap(false)) return;
  pidfd_send_signal(s.pidfd, sig);
}

// Python's exit function: terminate daemonic children, then join every child. A daemonic child
// that outlives SIGTERM by daemon_grace is killed, so exit never hangs on one.
void join_children_at_exit() {
  auto live = reap_finished();
  for (auto& s : live)
    if (s->daemon) signal_child(*s, SIGTERM);
  for (auto& s : live) {
    if (s->daemon && !wait_for_exit(*s, deadline_after(daemon_grace))) signal_child(*s, SIGKILL);
    wait_for_exit(*s, std::nullopt);
  }
  reap_finished();
}

void install_hooks() {
  static std::once_flag once;
  std::call_once(once, [] {
    on_fork_child(forget_children_in_child);
    at_process_exit(join_children_at_exit, 10);
  });
}

std::string default_name(const std::vector<int>& identity) {
  std::string name = "Process-";
  for (std::size_t i = 0; i < identity.size(); ++i) name += (i ? ":" : "") + std::to_string(identity[i]);
  return name;
}

// A state that still exists (not moved from): enough for the plain attributes.
ProcessState& present(const std::shared_ptr<ProcessState>& s) {
  if (!s) throw ValueError("process object was moved from");
  return *s;
}

// A state that may still talk to its child: neither moved from nor closed.
ProcessState& usable(const std::shared_ptr<ProcessState>& s) {
  auto& state = present(s);
  if (state.closed) throw ValueError("process object is closed");
  return state;
}

Deadline deadline_for(std::chrono::duration<double> timeout) {
  // Beyond a century is "no timeout": steady_clock's nanoseconds would overflow.
  if (timeout > std::chrono::hours(24 * 365 * 100)) return std::nullopt;
  return deadline_after(timeout);
}

} // namespace
} // namespace detail

using detail::ProcessState;

Process::Process() : Process(ProcessOptions{}) {}

Process::Process(ProcessOptions options) : state_(std::make_shared<ProcessState>()) {
  state_->identity = detail::next_child_identity();
  state_->name = options.name.empty() ? detail::default_name(state_->identity) : std::move(options.name);
  // Python: a process inherits its creator's daemon flag unless told otherwise.
  state_->daemon = options.daemon.value_or(detail::self_info().daemon);
  state_->start_method = options.start_method;
}

Process::Process(Process&&) noexcept = default;
Process& Process::operator=(Process&&) noexcept = default;
Process::~Process() = default;

void Process::run() {
  if (target_) target_();
}

void Process::start() {
  auto& s = detail::usable(state_);
  {
    std::lock_guard lock(s.m);
    if (!s.ours()) throw ProcessError("can only start a process object created by the current process");
    if (s.started) throw ProcessError("cannot start a process twice");
    if (detail::self_info().daemon) throw ProcessError("daemonic processes are not allowed to have children");
    s.started = true;
  }
  detail::install_hooks();
  detail::reap_finished();
  detail::Forked forked;
  try {
    forked = detail::start_child(s.start_method.value_or(get_start_method()), {s.name, s.daemon, s.identity},
                                 [this] { return bootstrap(); }, [this] { return spawn_target(); });
  } catch (...) {
    std::lock_guard lock(s.m);
    s.started = false;
    throw;
  }
  {
    std::lock_guard lock(s.m);
    s.pid = forked.pid;
    s.pidfd = forked.pidfd;
  }
  auto& c = detail::children();
  std::lock_guard lock(c.m);
  c.live.push_back(state_);
}

detail::SpawnTarget Process::spawn_target() const {
  if (typeid(*this) != typeid(Process)) {
    if (spawn_target_)
      throw ValueError("a Process subclass (" + detail::demangle(typeid(*this).name()) +
                       ") given a target cannot be started by spawn or forkserver: override run() instead");
    if (auto target = subclass_target()) return std::move(*target);
    throw ValueError("a Process subclass (" + detail::demangle(typeid(*this).name()) +
                     ") cannot be started by spawn or forkserver unless it says MULTIPROC_SPAWNABLE(class, "
                     "members...) in its body: its run() cannot reach a fresh process otherwise");
  }
  if (spawn_target_) return spawn_target_();
  return detail::make_spawn_target(+[] {}, std::tuple<>{});
}

void Process::become_current() {
  auto self = detail::self_info();
  detail::take_back_child_identity(state_->identity);  // this object names no child of ours
  state_->identity = detail::self_identity();
  state_->name = self.name;
  state_->daemon = self.daemon;
  state_->started = true;
  state_->is_current = true;
  state_->pid = self.pid;
}

namespace detail {

void check_spawnable_class(const std::type_info& object, const std::type_info& declared) {
  if (object != declared)
    throw ValueError("a Process subclass (" + demangle(object.name()) + ") derives from " + demangle(declared.name()) +
                     ", which says MULTIPROC_SPAWNABLE; say it in " + demangle(object.name()) +
                     " too, or its own members cannot cross into a spawn or forkserver child");
}

} // namespace detail

int Process::bootstrap() {
  // The child is single-threaded here; the inherited mutex may be held by a parent thread that
  // does not exist in this process, so the own copy is updated without it.
  state_->is_current = true;
  state_->pid = ::getpid();
  return detail::run_guarded([this] { run(); });
}

bool Process::join_for(std::chrono::duration<double> timeout) { return join_until(detail::deadline_for(timeout)); }

void Process::join() { join_until(std::nullopt); }

bool Process::join_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
  auto& s = detail::usable(state_);
  {
    std::lock_guard lock(s.m);
    if (!s.started) throw ProcessError("can only join a started process");
    if (!s.ours()) throw ProcessError("can only join a child process");
  }
  return detail::wait_for_exit(s, deadline);
}

bool Process::is_alive() const {
  auto& s = detail::usable(state_);
  std::lock_guard lock(s.m);
  if (s.is_current) return true;
  if (!s.started || !s.ours()) return false;
  return !s.reap(false);
}

void Process::terminate() { detail::signal_child(detail::usable(state_), SIGTERM); }
void Process::kill() { detail::signal_child(detail::usable(state_), SIGKILL); }

void Process::close() {
  if (!state_) return;
  auto& s = *state_;
  {
    std::lock_guard lock(s.m);
    if (s.closed) return;
    if (s.started && s.ours() && !s.reap(false))
      throw ValueError("cannot close a process while it is still running; join() or terminate() it first");
    s.release_pidfd();
    s.closed = true;
  }
  auto& c = detail::children();
  std::lock_guard lock(c.m);
  std::erase(c.live, state_);
}

std::optional<int> Process::exitcode() const {
  auto& s = detail::usable(state_);
  std::lock_guard lock(s.m);
  s.reap(false);
  return s.exitcode;
}

std::optional<pid_t> Process::pid() const {
  auto& s = detail::usable(state_);
  std::lock_guard lock(s.m);
  if (!s.pid) return std::nullopt;
  return s.pid;
}

const std::string& Process::name() const { return detail::present(state_).name; }

void Process::set_name(std::string name) {
  auto& s = detail::present(state_);
  std::lock_guard lock(s.m);
  s.name = std::move(name);
  if (s.is_current) detail::set_self_name(s.name);
}

bool Process::daemon() const { return detail::present(state_).daemon; }

void Process::set_daemon(bool daemon) {
  auto& s = detail::present(state_);
  std::lock_guard lock(s.m);
  if (s.started) throw ProcessError("cannot change the daemon flag of a started process");
  s.daemon = daemon;
}

int Process::sentinel() const {
  auto& s = detail::usable(state_);
  std::lock_guard lock(s.m);
  if (!s.started) throw ValueError("process not started");
  if (!s.ours()) throw ValueError("only the process that started a process has its sentinel");
  return s.pidfd;
}

ProcessInfo current_process() { return detail::self_info(); }
std::optional<ProcessInfo> parent_process() { return detail::parent_info(); }

std::vector<ProcessInfo> active_children() {
  std::vector<ProcessInfo> out;
  for (auto& s : detail::reap_finished()) {
    std::lock_guard lock(s->m);
    out.push_back({s->name, s->pid, s->daemon});
  }
  return out;
}

unsigned cpu_count() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1u;
}

// Registering the exit function here orders it as Python's import-time registration does: it
// runs after the atexit handlers the program registers later.
void init(int argc, char** argv) {
  detail::remember_argv(argc, argv);
  detail::run_if_spawned();
  detail::install_hooks();
  detail::serve_node_if_asked(argc, argv);
}
void freeze_support() {}

namespace {

constexpr int method_unset = -1;
std::atomic<int> g_start_method{method_unset};

// MULTIPROC_START_METHOD, as a program's default before any set_start_method: what lets one
// build of a program run under each method (the examples' test matrix does).
StartMethod start_method_from_environment() {
  const char* name = std::getenv("MULTIPROC_START_METHOD");
  std::string value = name ? name : "fork";
  if (value == "spawn") return StartMethod::spawn;
  if (value == "forkserver") return StartMethod::forkserver;
  if (value != "fork") throw ValueError("MULTIPROC_START_METHOD=" + value + ": expected fork, spawn or forkserver");
  return StartMethod::fork;
}

} // namespace

void set_start_method(StartMethod method) {
  switch (method) {
  case StartMethod::fork:
  case StartMethod::spawn:
  case StartMethod::forkserver: g_start_method.store(static_cast<int>(method)); return;
  }
  throw ValueError("unknown start method " + std::to_string(static_cast<int>(method)));
}

StartMethod get_start_method() {
  int method = g_start_method.load();
  if (method != method_unset) return static_cast<StartMethod>(method);
  auto from_env = start_method_from_environment();
  int expected = method_unset;
  g_start_method.compare_exchange_strong(expected, static_cast<int>(from_env));
  return static_cast<StartMethod>(g_start_method.load());
}

std::vector<StartMethod> get_all_start_methods() {
  return {StartMethod::fork, StartMethod::spawn, StartMethod::forkserver};
}

void set_forkserver_preload(void (*preload)()) { detail::set_forkserver_preload(preload); }

} // namespace multiproc
