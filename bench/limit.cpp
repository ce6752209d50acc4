// The raw OS limits: the same work as the library's measures, done with bare syscalls and no
// library at all (socketpairs, fork/_exit/waitpid, a process-shared pthread mutex). These are the
// ceilings the library is judged against; see bench/run for which measure uses which.
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;

// The library's default spin before blocking (detail::spin_duration), so the limit gets the
// same cheap wake-ups the library gets.
constexpr auto spin = std::chrono::microseconds(50);
constexpr std::size_t small_message = 16;
constexpr std::size_t mib = std::size_t{1} << 20;
constexpr long warmup_round_trips = 100;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

std::array<int, 2> make_socketpair() {
  std::array<int, 2> sv{};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv.data()) != 0) fail("socketpair");
  return sv;
}

// Forks a child that runs body and leaves with _exit (1 if body threw), never returning here.
template <class Body>
pid_t fork_child(Body body) {
  pid_t pid = ::fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "limit child: %s\n", e.what());
      ::_exit(1);
    }
    ::_exit(0);
  }
  return pid;
}

void wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail("waitpid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("a child failed");
}

// Reads exactly n bytes; spins on non-blocking reads for `spin`, yielding the CPU between
// tries (as the library's wait does) so that a peer sharing this CPU can run, then blocks.
void recv_exact(int fd, char* out, std::size_t n) {
  std::size_t got = 0;
  auto spin_end = Clock::now() + spin;
  while (got < n) {
    bool spinning = Clock::now() < spin_end;
    ssize_t r = ::recv(fd, out + got, n - got, spinning ? MSG_DONTWAIT : 0);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
    } else if (r == 0) {
      throw std::runtime_error("peer closed");
    } else if (errno == EAGAIN && spinning) {
      ::sched_yield();
    } else if (errno != EAGAIN && errno != EINTR) {
      fail("recv");
    }
  }
}

void send_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("send");
    }
    data += w;
    n -= static_cast<std::size_t>(w);
  }
}

// A child that answers `rounds` small messages, each with its own pid.
void echo_pid(int fd, long rounds) {
  std::array<char, small_message> buf{};
  for (long i = 0; i < rounds; ++i) {
    recv_exact(fd, buf.data(), buf.size());
    pid_t self = ::getpid();
    std::memcpy(buf.data(), &self, sizeof self);
    send_all(fd, buf.data(), buf.size());
  }
}

void round_trips(int fd, long rounds) {
  std::array<char, small_message> buf{};
  for (long i = 0; i < rounds; ++i) {
    send_all(fd, buf.data(), buf.size());
    recv_exact(fd, buf.data(), buf.size());
  }
}

// µs per round trip of a 16-byte message between two processes.
double pipe_roundtrip_small(long n) {
  auto [parent, child] = make_socketpair();
  pid_t pid = fork_child([&, c = child] { echo_pid(c, warmup_round_trips + n); });
  ::close(child);
  round_trips(parent, warmup_round_trips);
  auto start = Clock::now();
  round_trips(parent, n);
  double elapsed = seconds_since(start);
  ::close(parent);
  wait_child(pid);
  return elapsed / static_cast<double>(n) * 1e6;
}

// GB/s of n 1 MiB writes to a reader process, until it has read them all.
double pipe_bulk_1mib(long n) {
  auto [parent, child] = make_socketpair();
  pid_t pid = fork_child([&, c = child] {
    std::vector<char> buf(mib, 1);
    for (long i = 0; i < n; ++i) recv_exact(c, buf.data(), mib);
    send_all(c, buf.data(), 1);
  });
  ::close(child);
  std::vector<char> buf(mib, 2);
  auto start = Clock::now();
  for (long i = 0; i < n; ++i) send_all(parent, buf.data(), mib);
  recv_exact(parent, buf.data(), 1);
  double elapsed = seconds_since(start);
  ::close(parent);
  wait_child(pid);
  return static_cast<double>(n) * mib / elapsed / 1e9;
}

// µs per fork + _exit + waitpid of an empty child.
double process_start_join(long n) {
  auto start = Clock::now();
  for (long i = 0; i < n; ++i) wait_child(fork_child([] {}));
  return seconds_since(start) / static_cast<double>(n) * 1e6;
}

// A process-shared mutex and a counter in anonymous shared memory.
struct SharedCounter {
  pthread_mutex_t mutex;
  long value;
};

// robust: a holder's death frees the mutex (what the library's locks promise), at a price.
SharedCounter* make_shared_counter(bool robust = false) {
  void* mem = ::mmap(nullptr, sizeof(SharedCounter), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) fail("mmap");
  auto* shared = new (mem) SharedCounter{};
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  if (robust) pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&shared->mutex, &attr);
  pthread_mutexattr_destroy(&attr);
  return shared;
}

void locked_increments(SharedCounter& c, long n) {
  for (long i = 0; i < n; ++i) {
    pthread_mutex_lock(&c.mutex);
    ++c.value;
    pthread_mutex_unlock(&c.mutex);
  }
}

// ns per lock + unlock of an uncontended process-shared mutex.
double uncontended(long n, bool robust) {
  SharedCounter* c = make_shared_counter(robust);
  auto start = Clock::now();
  locked_increments(*c, n);
  double elapsed = seconds_since(start);
  ::munmap(c, sizeof *c);
  return elapsed / static_cast<double>(n) * 1e9;
}
double lock_uncontended(long n) { return uncontended(n, false); }
double lock_uncontended_robust(long n) { return uncontended(n, true); }

// Increments/s when two processes each add n under one process-shared mutex.
double value_locked_increment_2proc(long n) {
  SharedCounter* c = make_shared_counter();
  auto start = Clock::now();
  pid_t a = fork_child([&] { locked_increments(*c, n); });
  pid_t b = fork_child([&] { locked_increments(*c, n); });
  wait_child(a);
  wait_child(b);
  double elapsed = seconds_since(start);
  bool counted_all = c->value == 2 * n;
  ::munmap(c, sizeof *c);
  if (!counted_all) throw std::runtime_error("lost increments");
  return 2.0 * static_cast<double>(n) / elapsed;
}

// Parallel efficiency of n burn() tasks statically split over one child per core, against
// running them all in this process.
double pool_cpu_scaling(long n) {
  auto start = Clock::now();
  std::uint64_t serial_sum = 0;
  for (long i = 0; i < n; ++i) serial_sum += bench::burn(bench::burn_iters_per_task);
  double serial = seconds_since(start);

  long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  start = Clock::now();
  std::vector<pid_t> pids;
  for (long w = 0; w < cores; ++w) {
    pids.push_back(fork_child([=] {
      for (long i = w; i < n; i += cores) bench::burn(bench::burn_iters_per_task);
    }));
  }
  for (pid_t pid : pids) wait_child(pid);
  double parallel = seconds_since(start);
  if (serial_sum == 0) throw std::runtime_error("burn() folded away");
  return serial / (static_cast<double>(cores) * parallel);
}

// KiB of private memory of a forked child that has answered n small messages.
double worker_rss_kib(long n) {
  auto [parent, child] = make_socketpair();
  pid_t pid = fork_child([&, c = child] { echo_pid(c, n + 1); });
  ::close(child);
  round_trips(parent, n);
  long kib = bench::private_kib(pid);
  round_trips(parent, 1);
  ::close(parent);
  wait_child(pid);
  return static_cast<double>(kib);
}

constexpr bench::Measure measures[] = {
    {"pipe_roundtrip_small", pipe_roundtrip_small},
    {"pipe_bulk_1mib", pipe_bulk_1mib},
    {"process_start_join", process_start_join},
    {"lock_uncontended", lock_uncontended},
    {"lock_uncontended_robust", lock_uncontended_robust},
    {"value_locked_increment_2proc", value_locked_increment_2proc},
    {"pool_cpu_scaling", pool_cpu_scaling},
    {"worker_rss_kib", worker_rss_kib},
};

} // namespace

int main(int argc, char** argv) { return bench::run_measure(argc, argv, measures); }
