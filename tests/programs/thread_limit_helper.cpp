// A whole program for what only a process of its own can show: what Pool() and Manager() do when
// no more threads can be had (RLIMIT_NPROC, as a cgroup's pids.max would). Run as root, it first
// starts one (argv[1]: pool or manager) to load the plugins while every file is readable, then
// becomes a user of its own (uid 1000000 + its pid: no other live process is that user, so the
// limit counts this program's tasks only) and starts one under a limit of 1 to 12 tasks, then
// with the limit lifted. One line per attempt: "<limit> ok", "<limit> OSError: <what>",
// "<limit> other: <what>" for any other exception, "unlimited ok"; "skipped: needs root".
#include <grp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

namespace {

int square(int x) { return x * x; }

void start_pool() {
  mp::Pool pool(2);
  if (pool.apply(square, 7) != 49) throw std::logic_error("the pool answered wrong");
}

void start_manager() {
  mp::Manager manager;
  if (manager.Value<int>(7).get() != 7) throw std::logic_error("the manager answered wrong");
}

void attempt(const std::string& label, const std::function<void()>& start) {
  try {
    start();
    std::printf("%s ok\n", label.c_str());
  } catch (const mp::OSError& e) {
    std::printf("%s OSError: %s\n", label.c_str(), e.what());
  } catch (const std::exception& e) {
    std::printf("%s other: %s\n", label.c_str(), e.what());
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  if (argc != 2 || (std::strcmp(argv[1], "pool") != 0 && std::strcmp(argv[1], "manager") != 0)) {
    std::fprintf(stderr, "usage: thread_limit_helper pool|manager\n");
    return 2;
  }
  const std::function<void()> start = std::strcmp(argv[1], "pool") == 0 ? start_pool : start_manager;
  if (::geteuid() != 0) {
    std::printf("skipped: needs root\n");
    return 0;
  }
  start();
  auto user = static_cast<uid_t>(1000000 + ::getpid());
  if (::setgroups(0, nullptr) != 0 || ::setgid(user) != 0 || ::setuid(user) != 0) {
    std::printf("skipped: cannot become uid %u: %s\n", user, std::strerror(errno));
    return 0;
  }
  rlimit unlimited{};
  ::getrlimit(RLIMIT_NPROC, &unlimited);
  for (rlim_t tasks = 1; tasks <= 12; ++tasks) {
    rlimit limit{tasks, unlimited.rlim_max};
    ::setrlimit(RLIMIT_NPROC, &limit);
    attempt(std::to_string(tasks), start);
  }
  ::setrlimit(RLIMIT_NPROC, &unlimited);
  attempt("unlimited", start);
  return 0;
}
