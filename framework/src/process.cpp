#include "multiproc/process.hpp"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

#include "launch.hpp"
#include "multiproc/errors.hpp"

namespace multiproc {

namespace detail {

struct ProcessState {
  mutable std::mutex m;
  std::string name;
  bool daemon = false;
  std::vector<int> identity;
  pid_t pid = 0;
  int pidfd = -1;
  pid_t owner = 0;  // the process that started it: only it may wait for the child
  std::optional<int> exitcode;
  bool closed = false;

  ~ProcessState() {
    if (pidfd >= 0) {
      unregister_internal_fd(pidfd);
      ::close(pidfd);
    }
  }
};

namespace {

// Children started by this process and not yet reaped: for active_children() and the exit
// function, and so that an unjoined child whose Process object is gone is still reaped.
struct Children {
  std::mutex m;
  std::vector<std::shared_ptr<ProcessState>> live;
};
Children& children() {
  static auto* c = new Children;
  return *c;
}

// Reaps the child if it ended (blocking if asked); caller holds s.m.
bool poll_exit(ProcessState& s, bool block) {
  if (s.exitcode) return true;
  if (s.pidfd < 0) return false;
  s.exitcode = try_reap(s.pidfd, block);
  return s.exitcode.has_value();
}

std::vector<std::shared_ptr<ProcessState>> reap_and_list_live() {
  auto& c = children();
  std::lock_guard lock(c.m);
  std::erase_if(c.live, [](const std::shared_ptr<ProcessState>& s) {
    std::lock_guard sl(s->m);
    return poll_exit(*s, false);
  });
  return c.live;
}

// Python's exit function: terminate daemonic children, then join every child.
void join_children_at_exit() {
  auto live = reap_and_list_live();
  for (auto& s : live) {
    std::lock_guard sl(s->m);
    if (s->daemon && !s->exitcode) pidfd_send_signal(s->pidfd, SIGTERM);
  }
  for (auto& s : live) {
    std::lock_guard sl(s->m);
    poll_exit(*s, true);
  }
  std::lock_guard lock(children().m);
  children().live.clear();
}

void forget_children_in_child() { children().live.clear(); }

std::once_flag g_hooks_once;
void install_hooks() {
  std::call_once(g_hooks_once, [] {
    on_fork_child(forget_children_in_child);
    at_process_exit(join_children_at_exit, 10);
  });
}

std::string default_name(const std::vector<int>& identity) {
  std::string name = "Process-";
  for (std::size_t i = 0; i < identity.size(); ++i) name += (i ? ":" : "") + std::to_string(identity[i]);
  return name;
}

} // namespace
} // namespace detail

using detail::ProcessState;

Process::Process() : Process(ProcessOptions{}) {}

Process::Process(ProcessOptions options) : state_(std::make_shared<ProcessState>()) {
  state_->identity = detail::next_child_identity();
  state_->name = options.name.empty() ? detail::default_name(state_->identity) : std::move(options.name);
  // Python: a child inherits its creator's daemon flag unless told otherwise.
  state_->daemon = options.daemon.value_or(detail::self_info().daemon);
}

Process::Process(Process&&) noexcept = default;
Process& Process::operator=(Process&&) noexcept = default;
Process::~Process() = default;

void Process::run() {
  if (target_) target_();
}

namespace {
ProcessState& checked(const std::shared_ptr<ProcessState>& s) {
  if (!s) throw ValueError("process object was moved from");
  if (s->closed) throw ValueError("process object is closed");
  return *s;
}
} // namespace

void Process::start() {
  auto& s = checked(state_);
  detail::install_hooks();
  {
    std::lock_guard lock(s.m);
    if (s.pid) throw ProcessError("cannot start a process twice");
  }
  if (detail::self_info().daemon) throw ProcessError("daemonic processes are not allowed to have children");
  detail::reap_and_list_live();
  detail::ChildIdentity who{s.name, s.daemon, s.identity};
  auto forked = detail::fork_child(who, [this] { return detail::run_guarded([this] { run(); }); });
  {
    std::lock_guard lock(s.m);
    s.pid = forked.pid;
    s.pidfd = forked.pidfd;
    s.owner = ::getpid();
  }
  std::lock_guard lock(detail::children().m);
  detail::children().live.push_back(state_);
}

bool Process::join_for(std::chrono::nanoseconds timeout) {
  auto& s = checked(state_);
  int fd;
  {
    std::lock_guard lock(s.m);
    if (!s.pid) throw ProcessError("can only join a started process");
    if (s.owner != ::getpid()) throw ProcessError("can only join a child process");
    if (s.exitcode) return true;
    fd = s.pidfd;
  }
  if (timeout != std::chrono::nanoseconds::max()) {
    pollfd p{fd, POLLIN, 0};
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      int r = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, left.count())));
      if (r > 0) break;
      if (r == 0 && std::chrono::steady_clock::now() >= deadline) return false;
    }
  }
  std::lock_guard lock(s.m);
  return detail::poll_exit(s, true);
}

void Process::join() { join_for(std::chrono::nanoseconds::max()); }

bool Process::is_alive() const {
  auto& s = checked(state_);
  std::lock_guard lock(s.m);
  if (!s.pid || s.owner != ::getpid()) return false;
  return !detail::poll_exit(s, false);
}

namespace {
void signal_child(ProcessState& s, int sig) {
  std::lock_guard lock(s.m);
  if (!s.pid || s.exitcode || detail::poll_exit(s, false)) return;
  detail::pidfd_send_signal(s.pidfd, sig);
}
} // namespace

void Process::terminate() { signal_child(checked(state_), SIGTERM); }
void Process::kill() { signal_child(checked(state_), SIGKILL); }

void Process::close() {
  if (!state_ || state_->closed) return;
  auto& s = *state_;
  {
    std::lock_guard lock(s.m);
    if (s.pid && !detail::poll_exit(s, false))
      throw ValueError("cannot close a process while it is still running; join() or terminate() it first");
    if (s.pidfd >= 0) {
      detail::unregister_internal_fd(s.pidfd);
      ::close(s.pidfd);
      s.pidfd = -1;
    }
    s.closed = true;
  }
  std::lock_guard lock(detail::children().m);
  std::erase(detail::children().live, state_);
}

std::optional<int> Process::exitcode() const {
  auto& s = checked(state_);
  std::lock_guard lock(s.m);
  if (s.pid && s.owner == ::getpid()) detail::poll_exit(s, false);
  return s.exitcode;
}

std::optional<pid_t> Process::pid() const {
  auto& s = checked(state_);
  std::lock_guard lock(s.m);
  if (!s.pid) return std::nullopt;
  return s.pid;
}

const std::string& Process::name() const { return checked(state_).name; }
void Process::set_name(std::string name) {
  auto& s = checked(state_);
  std::lock_guard lock(s.m);
  s.name = std::move(name);
}
bool Process::daemon() const { return checked(state_).daemon; }
void Process::set_daemon(bool daemon) {
  auto& s = checked(state_);
  std::lock_guard lock(s.m);
  if (s.pid) throw ProcessError("cannot change daemon status of a started process");
  s.daemon = daemon;
}

int Process::sentinel() const {
  auto& s = checked(state_);
  std::lock_guard lock(s.m);
  if (!s.pid) throw ValueError("process not started");
  return s.pidfd;
}

ProcessInfo current_process() { return detail::self_info(); }
std::optional<ProcessInfo> parent_process() { return detail::parent_info(); }

std::vector<ProcessInfo> active_children() {
  std::vector<ProcessInfo> out;
  for (auto& s : detail::reap_and_list_live()) {
    std::lock_guard lock(s->m);
    out.push_back({s->name, s->pid, s->daemon});
  }
  return out;
}

unsigned cpu_count() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1u;
}

namespace {
std::vector<std::string> g_argv;
} // namespace

void init(int argc, char** argv) { g_argv.assign(argv, argv + argc); }
void freeze_support() {}

void set_start_method(StartMethod method) {
  if (method != StartMethod::fork)
    throw ValueError("start methods spawn and forkserver are not supported yet; use StartMethod::fork");
}
StartMethod get_start_method() { return StartMethod::fork; }

} // namespace multiproc
