#include "spawn.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>

#include "log.hpp"
#include "multiproc/detail/wire.hpp"
#include "multiproc/errors.hpp"

extern char** environ;

namespace multiproc::detail {

namespace {

// The child's end of its private socket, at this descriptor number, named by this variable.
constexpr const char* spawn_env = "MULTIPROC_SPAWN_FD";
constexpr int spawn_fd_number = 3;
// How long a spawned child has to reach mp::init and take its work.
constexpr std::chrono::seconds init_timeout{10};
// The most descriptors one work carries (the kernel's SCM_MAX_FD).
constexpr std::size_t max_fds = 253;

int g_spawn_fd = -1;  // set before main() in a spawned child, until mp::init takes it

std::mutex g_argv_mutex;
std::vector<std::string> g_argv;

[[noreturn]] void throw_errno(const std::string& what, int err = errno) {
  throw OSError(what + ": " + std::strerror(err), err);
}

// Before main(): a process started by spawn_child finds its socket in the environment and takes
// it out, so that programs it starts in turn do not see it. Until its main() calls mp::init it
// runs the parent's program: it dies with the parent meanwhile, and start() refuses to spawn.
__attribute__((constructor)) void note_spawned() {
  const char* value = std::getenv(spawn_env);
  if (value == nullptr) return;
  char* end = nullptr;
  long parent = std::strtol(value, &end, 10);
  ::unsetenv(spawn_env);
  if (end == value) return;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != static_cast<pid_t>(parent)) ::_exit(1);
  g_spawn_fd = spawn_fd_number;
}

void send_fds(int sock, const std::vector<int>& fds) {
  char byte = 0;
  iovec iov{&byte, 1};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  while (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
    if (errno != EINTR) throw_errno("sending descriptors to a child failed");
}

std::vector<int> receive_fds(int sock, std::size_t n) {
  char byte;
  iovec iov{&byte, 1};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * n));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t r;
  while ((r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0)
    if (errno != EINTR) throw_errno("receiving descriptors failed");
  std::vector<int> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    auto* data = reinterpret_cast<const int*>(CMSG_DATA(c));
    fds.insert(fds.end(), data, data + count);
  }
  if (r == 0 || fds.size() != n || (msg.msg_flags & MSG_CTRUNC)) {
    for (int fd : fds) ::close(fd);
    throw Error("a child's work came without the descriptors it announced");
  }
  return fds;
}

std::vector<std::string> program_argv() {
  {
    std::lock_guard lock(g_argv_mutex);
    if (!g_argv.empty()) return g_argv;
  }
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> out;
  for (std::size_t start = 0; start < all.size();) {
    auto end = all.find('\0', start);
    if (end == std::string::npos) end = all.size();
    out.push_back(all.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// environ without our variable, plus ours naming this process as the parent.
std::vector<std::string> child_environment() {
  std::vector<std::string> env;
  std::string prefix = std::string(spawn_env) + "=";
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, prefix.c_str(), prefix.size()) != 0) env.emplace_back(*e);
  env.push_back(prefix + std::to_string(::getpid()));
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// An fd closed on scope exit unless released.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

pid_t spawn_program(int child_end) {
  // dup2 onto the same number would leave O_CLOEXEC set: move the socket off it first.
  Fd moved;
  if (child_end == spawn_fd_number) {
    moved.fd = ::fcntl(child_end, F_DUPFD_CLOEXEC, spawn_fd_number + 1);
    if (moved.fd < 0) throw_errno("fcntl failed");
    child_end = moved.fd;
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawnattr_init(&attr);
  ::posix_spawn_file_actions_adddup2(&actions, child_end, spawn_fd_number);
  // Only the standard streams and the socket cross: the work's descriptors follow by SCM_RIGHTS.
  ::posix_spawn_file_actions_addclosefrom_np(&actions, spawn_fd_number + 1);
  sigset_t none;
  sigemptyset(&none);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  auto argv = program_argv();
  auto env = child_environment();
  auto argv_p = pointers(argv);
  auto env_p = pointers(env);
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv_p.data(), env_p.data());
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  if (err != 0) throw_errno("spawning a child (posix_spawn of /proc/self/exe) failed", err);
  return pid;
}

// Waits for the child's acknowledgement: true once it took its work; false when it ended or the
// time is up.
bool wait_for_init(int sock, int pidfd) {
  auto deadline = std::chrono::steady_clock::now() + init_timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd fds[] = {{sock, POLLIN, 0}, {pidfd, POLLIN, 0}};
    int r = ::poll(fds, 2, static_cast<int>(left.count()) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw_errno("poll failed");
    if (fds[0].revents) {
      char ack;
      ssize_t n;
      while ((n = ::read(sock, &ack, 1)) < 0 && errno == EINTR) {}
      return n == 1;
    }
    if (fds[1].revents) return false;
  }
}

void kill_and_reap(int pidfd) {
  pidfd_send_signal(pidfd, SIGKILL);
  try_reap(pidfd, true);
}

} // namespace

ReceivedFds::~ReceivedFds() {
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
}

int ReceivedFds::take(std::size_t index) {
  if (index >= fds_.size() || fds_[index] < 0) throw Error("a handle's descriptor is missing from the child's work");
  return std::exchange(fds_[index], -1);
}

int ReceivedFds::duplicate(std::size_t index) const {
  if (index >= fds_.size() || fds_[index] < 0) throw Error("a handle's descriptor is missing from the child's work");
  int fd = ::fcntl(fds_[index], F_DUPFD_CLOEXEC, 0);
  if (fd < 0) throw_errno("dup failed");
  return fd;
}

void check_argument_count(const msgpack::object& args, std::size_t expected) {
  if (args.type != msgpack::type::ARRAY || args.via.array.size != expected)
    throw TypeError("a child's arguments do not match its target (" + std::to_string(expected) + " expected)");
}

void throw_untransferable_target(const std::string& type) {
  throw ValueError("under start methods spawn and forkserver a target must be a function pointer or a "
                   "captureless lambda, not " + type + " (a capturing lambda or a functor's state cannot "
                   "reach a fresh process): pass the state as arguments");
}

void throw_untransferable_argument(std::size_t position, const std::string& type) {
  throw ValueError("argument " + std::to_string(position) + " of the target (" + type +
                   ") can cross into a spawn or forkserver child neither as MessagePack nor as a library "
                   "handle");
}

void reduce_function(msgpack::packer<Buffer>& pk, erased_fn fn) {
  pk.pack(identify_function(reinterpret_cast<const void*>(fn)));
}

erased_fn rebuild_function(const msgpack::object& o) {
  return reinterpret_cast<erased_fn>(locate_function(convert<FunctionId>(o)));
}

ChildWork make_work(const ChildIdentity& who, const SpawnTarget& target, pid_t forker_tid) {
  if (target.fds.size() > max_fds)
    throw ValueError("a child's arguments hold " + std::to_string(target.fds.size()) + " descriptors; at most " +
                     std::to_string(max_fds) + " can cross");
  auto self = self_info();
  return {who.name,     who.daemon,  who.identity, self.name,
          self.pid,     self.daemon, forker_tid,   identify_function(reinterpret_cast<const void*>(target.runner)),
          identify_function(reinterpret_cast<const void*>(target.fn)),    target.args,
          static_cast<std::uint32_t>(target.fds.size())};
}

void send_work(int fd, const ChildWork& work, const std::vector<int>& fds) {
  write_frame(fd, encode(work));
  if (!fds.empty()) send_fds(fd, fds);
}

// Sends the work to a spawned child; false when the child is gone already (a program without
// mp::init that ended before the work was written: EPIPE or ECONNRESET, not a failure of ours).
bool offer_work(int fd, const ChildWork& work, const std::vector<int>& fds) {
  try {
    send_work(fd, work, fds);
    return true;
  } catch (const OSError& e) {
    if (e.error_number() == EPIPE || e.error_number() == ECONNRESET) return false;
    throw;
  }
}

ReceivedWork receive_work(int fd) {
  auto n = read_frame_header(fd);
  auto work = decode<ChildWork>(read_payload(fd, n));
  if (work.nfds > max_fds) throw Error("a child's work announces too many descriptors");
  std::vector<int> fds;
  if (work.nfds > 0) fds = receive_fds(fd, work.nfds);
  return {std::move(work), std::move(fds)};
}

PreparedWork prepare_work(ReceivedWork received) {
  PreparedWork p;
  p.fds = std::make_shared<ReceivedFds>(std::move(received.fds));
  p.work = std::move(received.work);
  p.runner = reinterpret_cast<child_runner>(locate_function(p.work.runner));
  p.fn = reinterpret_cast<erased_fn>(locate_function(p.work.fn));
  p.args = unpack_untrusted(p.work.args);
  return p;
}

void run_work(PreparedWork& p, bool forked) {
  const auto& w = p.work;
  if (w.forker_tid != 0)
    die_with_forking_thread(w.parent_pid, w.forker_tid);
  else if (!forked)
    ::prctl(PR_SET_PDEATHSIG, 0);
  become_child({w.name, w.daemon, w.identity}, ProcessInfo{w.parent_name, w.parent_pid, w.parent_daemon}, forked,
               [&p] {
                 p.runner(p.fn, p.args.get(), *p.fds);
                 return 0;
               });
}

Forked spawn_child(const ChildIdentity& who, const SpawnTarget& target, bool tied) {
  if (spawned_without_init())
    throw ProcessError("this process was started by spawn and its main() has not called mp::init(argc, argv): it "
                       "may not start children");
  auto work = make_work(who, target, tied ? ::gettid() : 0);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("socketpair failed");
  Fd ours(sv[0]);
  Fd theirs(sv[1]);
  pid_t pid = spawn_program(theirs.fd);
  ::close(theirs.release());
  int pidfd = pidfd_open(pid);
  if (pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw_errno("pidfd_open failed", err);
  }
  try {
    bool offered = offer_work(ours.fd, work, target.fds);
    if (!offered || !wait_for_init(ours.fd, pidfd)) {
      bool ended = !offered || block_until_readable(pidfd, deadline_after(std::chrono::seconds(0)));
      throw ProcessError(std::string("the spawned child ") +
                         (ended ? "ended before it took its work" : "did not take its work within 10 s and was killed") +
                         ": a program started by spawn or forkserver must call mp::init(argc, argv) first in main()");
    }
  } catch (...) {
    kill_and_reap(pidfd);
    ::close(pidfd);
    throw;
  }
  register_internal_fd(pidfd);
  log(LogLevel::info, "spawned {} (pid {})", who.name, pid);
  return {pid, pidfd};
}

void run_if_spawned() {
  if (g_spawn_fd < 0) return;
  int sock = std::exchange(g_spawn_fd, -1);
  PreparedWork prepared;
  try {
    prepared = prepare_work(receive_work(sock));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multiproc: a spawned child could not take its work: %s\n", e.what());
    ::_exit(1);
  }
  char ack = 1;
  [[maybe_unused]] auto n = ::write(sock, &ack, 1);
  ::close(sock);
  run_work(prepared, false);
}

bool spawned_without_init() { return g_spawn_fd >= 0; }

void remember_argv(int argc, char** argv) {
  if (argc <= 0 || argv == nullptr) return;
  std::lock_guard lock(g_argv_mutex);
  g_argv.assign(argv, argv + argc);
}

} // namespace multiproc::detail
