// mp::Process and the process-level functions, with real child processes. Claims about a whole
// program (exit function, atexit handlers, buffered output, a killed parent) run
// programs/process_helper.cpp as a subprocess and read what it prints.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <multiproc/multiproc.hpp>
#include <numeric>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "programs/proc_children.hpp"
#include "signal_storm.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

extern char** environ;

namespace {

constexpr auto patience = 20s;  // bound of every wait that is expected to succeed

// ---- what the children run ------------------------------------------------------------------

void do_nothing() {}
void exit_with(int code) { throw mp::SystemExit{code}; }
void call_std_exit(int code) { std::exit(code); }
void raise_signal(int sig) {
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}
void pause_forever() {
  for (;;) ::pause();
}
// Tells the parent it is running, then waits to be terminated.
void await_sigterm(mp::Connection ready) {
  ready.send(true);
  pause_forever();
}
// Stays alive until the parent sends something (or closes the pipe everywhere).
void block_until_released(mp::Connection release) { release.recv<int>(); }

void send_arguments(mp::Connection out, int i, std::string s, double d, std::vector<int> v,
                    std::map<std::string, int> m) {
  out.send(std::make_tuple(i, s, d, v, m));
}

// Throws after pointing its stderr at the test's pipe.
void fail_with_stderr_to(int stderr_fd) {
  ::dup2(stderr_fd, STDERR_FILENO);
  throw mp::ValueError("the disk is on fire");
}

struct Multiply {
  int factor;
  void operator()(mp::Connection out, int x) const { out.send(x * factor); }
};

struct Identity {
  std::string name;
  pid_t pid;
  std::string parent_name;
  pid_t parent_pid;
  bool daemon;
  MSGPACK_DEFINE(name, pid, parent_name, parent_pid, daemon);
};

Identity my_identity() {
  auto me = mp::current_process();
  auto parent = mp::parent_process();
  return {me.name, me.pid, parent ? parent->name : "", parent ? parent->pid : 0, me.daemon};
}

void report_identity(mp::Connection out) { out.send(my_identity()); }

// Reports itself, then starts a grandchild that reports too.
void report_identity_and_grandchild(mp::Connection out) {
  out.send(my_identity());
  mp::Process grandchild(report_identity, out);
  grandchild.start();
  grandchild.join();
}

// Reports what starting a child from here threw ("" when nothing did).
void try_to_start_a_child(mp::Connection out) {
  try {
    mp::Process(do_nothing).start();
    out.send(std::string());
  } catch (const mp::ProcessError& e) {
    out.send(std::string(e.what()));
  }
}

void start_grandchild_exiting_with(int code) {
  mp::Process grandchild(exit_with, code);
  grandchild.start();
  grandchild.join();
  throw mp::SystemExit{*grandchild.exitcode()};
}

void sum_range_and_send(mp::Connection out, long first, long last) {
  long sum = 0;
  for (long i = first; i < last; ++i) sum += i;
  out.send(sum);
}

// Seed 004's MyProcess: a subclass that overrides run().
class Greeter : public mp::Process {
public:
  Greeter(mp::Connection out, std::string who) : out_(std::move(out)), who_(std::move(who)) {}
  void run() override {
    out_.send(std::make_tuple("hello " + who_ + " from " + mp::current_process().name, is_alive(),
                              pid() == ::getpid()));
  }

private:
  mp::Connection out_;
  std::string who_;
};

// ---- helpers of the parent --------------------------------------------------------------------

template <class T>
T receive(mp::Connection& c) {
  REQUIRE(c.poll(patience));
  return c.recv<T>();
}

bool readable_within(int fd, std::chrono::milliseconds timeout) {
  return !mp::connection::wait(std::vector<int>{fd}, timeout).empty();
}

// Everything written to fd until EOF (every writer closed), bounded by patience.
std::string read_to_eof(int fd) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + patience;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    REQUIRE(readable_within(fd, std::max(left, 0ms)));
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    REQUIRE(n >= 0);
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::size_t occurrences(const std::string& text, const std::string& word) {
  std::size_t n = 0;
  for (auto at = text.find(word); at != std::string::npos; at = text.find(word, at + word.size())) ++n;
  return n;
}

bool is_zombie_child(pid_t pid) {
  auto zombies = multiproc_test::zombie_children_of(::getpid());
  return std::find(zombies.begin(), zombies.end(), pid) != zombies.end();
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// programs/process_helper run as a real subprocess: stdin from us, stdout and stderr to one pipe.
class Helper {
public:
  // start_method: MULTIPROC_START_METHOD in the program's environment.
  explicit Helper(const std::string& mode, const std::string& start_method = "fork",
                  const std::string& program = "process_helper") {
    int in[2], out[2];
    REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
    std::string path = MULTIPROC_TEST_PROGRAMS_DIR "/" + program;
    char* argv[] = {path.data(), const_cast<char*>(mode.c_str()), nullptr};
    std::vector<std::string> env{"MULTIPROC_START_METHOD=" + start_method};
    for (char** e = environ; *e; ++e)
      if (std::string_view(*e).substr(0, 23) != "MULTIPROC_START_METHOD=") env.emplace_back(*e);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    int err = ::posix_spawn(&pid_, path.c_str(), &actions, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    REQUIRE(err == 0);
    pidfd_ = pidfd_open(pid_);
    REQUIRE(pidfd_ >= 0);
  }
  Helper(const Helper&) = delete;
  Helper& operator=(const Helper&) = delete;
  ~Helper() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(pidfd_);
    ::close(stdin_);
    ::close(stdout_);
  }

  pid_t pid() const { return pid_; }
  void write_line(const std::string& line) {
    std::string s = line + "\n";
    REQUIRE(::write(stdin_, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
  }
  // Reads until `marker` has appeared; everything read so far.
  const std::string& read_until(const std::string& marker) {
    auto deadline = std::chrono::steady_clock::now() + patience;
    char buf[4096];
    while (output_.find(marker) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      INFO("output so far: " << output_);
      REQUIRE(readable_within(stdout_, std::max(left, 0ms)));
      auto n = ::read(stdout_, buf, sizeof buf);
      REQUIRE(n > 0);
      output_.append(buf, static_cast<std::size_t>(n));
    }
    return output_;
  }
  // Whether the program ends within timeout; its exit code (or -signal) once it did.
  bool exits_within(std::chrono::milliseconds timeout) {
    if (!readable_within(pidfd_, timeout)) return false;
    siginfo_t info{};
    REQUIRE(::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED) == 0);
    status_ = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
    return true;
  }
  // Waits for the end; the whole output and the exit status.
  std::pair<std::string, int> finish() {
    REQUIRE(exits_within(patience));
    output_ += read_to_eof(stdout_);
    return {output_, *status_};
  }

private:
  pid_t pid_ = 0;
  int pidfd_ = -1, stdin_ = -1, stdout_ = -1;
  std::string output_;
  std::optional<int> status_;
};

pid_t number_after(const std::string& text, const std::string& label) {
  auto at = text.find(label);
  REQUIRE(at != std::string::npos);
  return static_cast<pid_t>(std::stol(text.substr(at + label.size())));
}

} // namespace

// ---- targets and arguments ----------------------------------------------------------------------

TEST_CASE("process: a free function target runs in a child with arguments of several types", "[process]") {
  auto [reader, writer] = mp::Pipe(false);
  std::map<std::string, int> m{{"a", 1}, {"b", 2}};
  mp::Process p(send_arguments, writer, 42, std::string("bob"), 2.5, std::vector<int>{1, 2, 3}, m);
  p.start();
  auto got = receive<std::tuple<int, std::string, double, std::vector<int>, std::map<std::string, int>>>(reader);
  CHECK(got == std::make_tuple(42, std::string("bob"), 2.5, std::vector<int>{1, 2, 3}, m));
  REQUIRE(p.join(patience));
  CHECK(p.exitcode() == 0);
}

TEST_CASE("process: lambdas, capturing lambdas and functors are targets", "[process]") {
  auto [reader, writer] = mp::Pipe(false);

  SECTION("a captureless lambda with arguments") {
    mp::Process p([](mp::Connection out, int a, int b) { out.send(a + b); }, writer, 2, 3);
    p.start();
    CHECK(receive<int>(reader) == 5);
    REQUIRE(p.join(patience));
  }
  SECTION("a lambda capturing by value and by reference: the child has a copy of the memory") {
    std::vector<long> numbers(100000);
    std::iota(numbers.begin(), numbers.end(), 1L);
    std::string label = "sum";
    mp::Process p([&numbers, label, writer]() mutable {
      writer.send(label + "=" + std::to_string(std::accumulate(numbers.begin(), numbers.end(), 0L)));
    });
    p.start();
    CHECK(receive<std::string>(reader) == "sum=5000050000");
    REQUIRE(p.join(patience));
  }
  SECTION("a functor") {
    mp::Process p(Multiply{7}, writer, 6);
    p.start();
    CHECK(receive<int>(reader) == 42);
    REQUIRE(p.join(patience));
  }
}

TEST_CASE("process: a subclass overriding run() runs it in the child (seed MyProcess)", "[process]") {
  auto [reader, writer] = mp::Pipe(false);
  std::vector<Greeter> greeters;
  for (int i = 0; i < 5; ++i) greeters.emplace_back(writer, "Python");
  for (auto& g : greeters) g.start();
  std::vector<std::string> greetings;
  for (std::size_t i = 0; i < greeters.size(); ++i) {
    auto [greeting, alive_inside, own_pid_inside] = receive<std::tuple<std::string, bool, bool>>(reader);
    greetings.push_back(greeting);
    CHECK(alive_inside);
    CHECK(own_pid_inside);
  }
  for (auto& g : greeters) {
    REQUIRE(g.join(patience));
    CHECK(g.exitcode() == 0);
    CHECK(std::count(greetings.begin(), greetings.end(), "hello Python from " + g.name()) == 1);
  }
}

// ---- exit codes ---------------------------------------------------------------------------------

TEST_CASE("process: exit codes follow Python's", "[process]") {
  SECTION("a target that returns gives 0") {
    mp::Process p(do_nothing);
    p.start();
    p.join();
    CHECK(p.exitcode() == 0);
  }
  SECTION("SystemExit{n} gives n") {
    mp::Process p(exit_with, 7);
    p.start();
    p.join();
    CHECK(p.exitcode() == 7);
  }
  SECTION("std::exit(n) in the child gives n") {
    mp::Process p(call_std_exit, 4);
    p.start();
    p.join();
    CHECK(p.exitcode() == 4);
  }
  SECTION("a signal N that kills the child gives -N") {
    mp::Process p(raise_signal, SIGUSR1);
    p.start();
    p.join();
    CHECK(p.exitcode() == -SIGUSR1);
  }
  SECTION("an exception gives 1 and prints 'Process <name>:' and the message on stderr") {
    int err[2];
    REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
    mp::Process p(mp::ProcessOptions{.name = "worker-7"}, fail_with_stderr_to, err[1]);
    p.start();
    ::close(err[1]);
    std::string text = read_to_eof(err[0]);
    ::close(err[0]);
    p.join();
    CHECK(p.exitcode() == 1);
    CHECK(text.find("Process worker-7:") != std::string::npos);
    CHECK(text.find("the disk is on fire") != std::string::npos);
  }
}

TEST_CASE("process: terminate gives exit code -15 and kill gives -9 (seed 000)", "[process]") {
  auto [release, keep] = mp::Pipe();
  mp::Process p1(mp::ProcessOptions{.daemon = true}, block_until_released, keep);
  p1.start();
  CHECK(p1.is_alive());
  release.send(1);
  REQUIRE(p1.join(patience));
  CHECK_FALSE(p1.is_alive());
  CHECK(p1.exitcode() == 0);

  mp::Process p2(mp::ProcessOptions{.daemon = true}, await_sigterm, keep);
  p2.start();
  CHECK(receive<bool>(release));
  CHECK(p2.is_alive());
  p2.terminate();
  REQUIRE(p2.join(patience));
  CHECK_FALSE(p2.is_alive());
  CHECK(p2.exitcode() == -SIGTERM);
  p2.terminate();  // no effect once ended
  p2.kill();
  CHECK(p2.exitcode() == -SIGTERM);

  mp::Process p3(mp::ProcessOptions{.daemon = true}, pause_forever);
  p3.start();
  p3.kill();
  REQUIRE(p3.join(patience));
  CHECK(p3.exitcode() == -SIGKILL);
}

// ---- waiting --------------------------------------------------------------------------------------

TEST_CASE("process: join with a timeout tells whether the child ended", "[process]") {
  auto [release, keep] = mp::Pipe();
  mp::Process p(mp::ProcessOptions{.daemon = true}, block_until_released, keep);
  p.start();
  CHECK_FALSE(p.join(0s));
  CHECK_FALSE(p.join(-1s));
  CHECK_FALSE(p.join(50ms));
  CHECK(p.is_alive());
  CHECK(p.exitcode() == std::nullopt);
  release.send(1);
  CHECK(p.join(patience));
  CHECK(p.join(0s));
  p.join();  // joining an ended process returns at once
  CHECK_FALSE(p.is_alive());
  CHECK(p.exitcode() == 0);
}

TEST_CASE("process: join(timeout) expires on time under a storm of signals", "[process]") {
  using multiproc_test::SignalStorm;
  constexpr auto timeout = 300ms;
  auto [release, keep] = mp::Pipe();
  mp::Process p(mp::ProcessOptions{.daemon = true}, block_until_released, keep);
  p.start();
  bool joined = true;
  auto took = multiproc_test::time_under_storm(timeout, [&] { joined = p.join(timeout); });
  REQUIRE(took);  // the storm kept this thread interrupted throughout one of the tries
  CHECK_FALSE(joined);
  CHECK(*took >= timeout);
  // A join that restarted with its whole timeout at every signal would last as long as the storm.
  CHECK(*took < SignalStorm::longest / 2);
  release.send(1);
  CHECK(p.join(patience));
}

TEST_CASE("process: join from several threads at once returns in each", "[process]") {
  auto [release, keep] = mp::Pipe();
  mp::Process p(mp::ProcessOptions{.daemon = true}, block_until_released, keep);
  p.start();
  std::vector<std::thread> joiners;
  std::atomic<int> joined{0};
  for (int i = 0; i < 3; ++i) joiners.emplace_back([&] { joined += p.join(patience); });
  CHECK(p.is_alive());  // not blocked by the joiners
  release.send(1);
  for (auto& t : joiners) t.join();
  CHECK(joined == 3);
  CHECK(p.exitcode() == 0);
}

TEST_CASE("process: the sentinel becomes readable when the child ends and works with connection::wait",
          "[process]") {
  auto [release, keep] = mp::Pipe();
  mp::Process slow(mp::ProcessOptions{.daemon = true}, block_until_released, keep);
  mp::Process fast(do_nothing);
  CHECK_THROWS_AS(fast.sentinel(), mp::ValueError);
  slow.start();
  fast.start();
  auto ready = mp::connection::wait(std::vector<int>{slow.sentinel(), fast.sentinel()}, patience);
  CHECK(ready == std::vector<int>{fast.sentinel()});
  CHECK(mp::connection::wait(std::vector<int>{slow.sentinel()}, 50ms).empty());
  release.send(1);
  CHECK(mp::connection::wait(std::vector<int>{slow.sentinel()}, patience) == std::vector<int>{slow.sentinel()});
  slow.join();
  fast.join();
  CHECK(readable_within(slow.sentinel(), 0ms));  // stays readable after the child is reaped
}

// ---- misuse -----------------------------------------------------------------------------------

TEST_CASE("process: lifecycle misuse raises typed errors", "[process]") {
  SECTION("join before start is a ProcessError") {
    mp::Process p(do_nothing);
    CHECK_THROWS_AS(p.join(), mp::ProcessError);
    CHECK_THROWS_AS(p.join(1s), mp::ProcessError);
    CHECK_FALSE(p.is_alive());
    CHECK(p.pid() == std::nullopt);
    CHECK(p.exitcode() == std::nullopt);
    p.terminate();  // no effect before start
  }
  SECTION("starting twice is a ProcessError") {
    mp::Process p(do_nothing);
    p.start();
    CHECK_THROWS_AS(p.start(), mp::ProcessError);
    p.join();
    CHECK_THROWS_AS(p.start(), mp::ProcessError);
  }
  SECTION("set_daemon after start is a ProcessError") {
    mp::Process p(do_nothing);
    p.set_daemon(true);
    p.set_daemon(false);
    p.start();
    CHECK_THROWS_AS(p.set_daemon(true), mp::ProcessError);
    p.join();
  }
  SECTION("close while running is a ValueError; after join it frees the process") {
    auto [release, keep] = mp::Pipe();
    mp::Process p(mp::ProcessOptions{.daemon = true}, block_until_released, keep);
    p.start();
    CHECK_THROWS_AS(p.close(), mp::ValueError);
    CHECK(p.is_alive());
    release.send(1);
    p.join();
    p.close();
    p.close();  // closing twice is harmless
    CHECK_THROWS_AS(p.start(), mp::ValueError);
    CHECK_THROWS_AS(p.join(), mp::ValueError);
    CHECK_THROWS_AS(p.join(0s), mp::ValueError);
    CHECK_THROWS_AS(p.is_alive(), mp::ValueError);
    CHECK_THROWS_AS(p.exitcode(), mp::ValueError);
    CHECK_THROWS_AS(p.pid(), mp::ValueError);
    CHECK_THROWS_AS(p.sentinel(), mp::ValueError);
    CHECK_THROWS_AS(p.terminate(), mp::ValueError);
    CHECK_THROWS_AS(p.kill(), mp::ValueError);
    CHECK(p.name().rfind("Process-", 0) == 0);  // plain attributes stay readable, as in Python
    CHECK(p.daemon());
  }
  SECTION("a closed, never started process refuses to start") {
    mp::Process p(do_nothing);
    p.close();
    CHECK_THROWS_AS(p.start(), mp::ValueError);
  }
}

TEST_CASE("process: a daemonic process may not start children", "[process]") {
  auto [reader, writer] = mp::Pipe(false);
  mp::Process p(mp::ProcessOptions{.daemon = true}, try_to_start_a_child, writer);
  CHECK(p.daemon());
  p.start();
  CHECK(receive<std::string>(reader).find("daemonic processes are not allowed to have children") !=
        std::string::npos);
  REQUIRE(p.join(patience));
  CHECK(p.exitcode() == 0);

  mp::Process ordinary(try_to_start_a_child, writer);
  ordinary.start();
  CHECK(receive<std::string>(reader).empty());
  REQUIRE(ordinary.join(patience));
}

TEST_CASE("process: a moved Process keeps its child and the moved-from one refuses use", "[process]") {
  mp::Process a(exit_with, 5);
  a.start();
  mp::Process b(std::move(a));
  CHECK_THROWS_AS(a.is_alive(), mp::ValueError);
  CHECK_THROWS_AS(a.join(), mp::ValueError);
  CHECK_THROWS_AS(a.name(), mp::ValueError);
  a.close();  // does nothing
  REQUIRE(b.join(patience));
  CHECK(b.exitcode() == 5);

  mp::Process c(do_nothing);
  c = std::move(b);
  CHECK(c.exitcode() == 5);
  a = mp::Process(exit_with, 6);  // a moved-from object can be assigned again
  a.start();
  REQUIRE(a.join(patience));
  CHECK(a.exitcode() == 6);
}

// ---- identity ------------------------------------------------------------------------------------

TEST_CASE("process: names and identities follow Python's (MainProcess, Process-N, Process-N:M)",
          "[process]") {
  auto me = mp::current_process();
  CHECK(me.name == "MainProcess");
  CHECK(me.pid == ::getpid());
  CHECK_FALSE(me.daemon);
  CHECK(mp::parent_process() == std::nullopt);

  mp::Process first(do_nothing), second(do_nothing);
  REQUIRE(first.name().rfind("Process-", 0) == 0);
  int n = std::stoi(first.name().substr(8));
  CHECK(second.name() == "Process-" + std::to_string(n + 1));

  auto [reader, writer] = mp::Pipe(false);
  mp::Process p(report_identity_and_grandchild, writer);
  p.start();
  auto child = receive<Identity>(reader);
  auto grandchild = receive<Identity>(reader);
  REQUIRE(p.join(patience));
  CHECK(child.name == p.name());
  CHECK(child.pid == *p.pid());
  CHECK(child.parent_name == "MainProcess");
  CHECK(child.parent_pid == ::getpid());
  CHECK(grandchild.name == p.name() + ":1");
  CHECK(grandchild.parent_name == p.name());
  CHECK(grandchild.parent_pid == *p.pid());

  mp::Process named(mp::ProcessOptions{.name = "custom"}, report_identity, writer);
  CHECK(named.name() == "custom");
  named.set_name("renamed");
  named.start();
  CHECK(receive<Identity>(reader).name == "renamed");
  REQUIRE(named.join(patience));
}

TEST_CASE("process: active_children lists live children and reaps the finished ones", "[process]") {
  CHECK(mp::active_children().empty());
  auto [release, keep] = mp::Pipe();
  mp::Process blocked(mp::ProcessOptions{.name = "blocked", .daemon = true}, block_until_released, keep);
  mp::Process quick(mp::ProcessOptions{.name = "quick"}, do_nothing);
  blocked.start();
  quick.start();
  REQUIRE(readable_within(quick.sentinel(), patience));
  REQUIRE(is_zombie_child(*quick.pid()));
  auto live = mp::active_children();
  REQUIRE(live.size() == 1);
  CHECK(live[0].name == "blocked");
  CHECK(live[0].pid == *blocked.pid());
  CHECK(live[0].daemon);
  CHECK_FALSE(is_zombie_child(*quick.pid()));
  CHECK(quick.exitcode() == 0);  // the Process object still learns the exit code
  release.send(1);
  REQUIRE(blocked.join(patience));
  CHECK(mp::active_children().empty());
}

TEST_CASE("process: an unjoined child whose Process object is gone is reaped by the next start() or "
          "active_children()",
          "[process]") {
  pid_t pid;
  int ended;
  {
    mp::Process p(do_nothing);
    p.start();
    pid = *p.pid();
    ended = ::dup(p.sentinel());
  }
  REQUIRE(readable_within(ended, patience));
  ::close(ended);
  REQUIRE(is_zombie_child(pid));
  SECTION("by active_children()") {
    CHECK(mp::active_children().empty());
    CHECK_FALSE(is_zombie_child(pid));
  }
  SECTION("by the next start()") {
    mp::Process next(do_nothing);
    next.start();
    CHECK_FALSE(is_zombie_child(pid));
    REQUIRE(next.join(patience));
  }
  CHECK(multiproc_test::zombie_children_of(::getpid()).empty());
}

// ---- scale and threads -----------------------------------------------------------------------------

TEST_CASE("process: 1, 2, 4 and 8 children run side by side, report through pipes and are all reaped",
          "[process]") {
  const int n = GENERATE(1, 2, 4, 8);
  std::vector<mp::Connection> readers;
  std::vector<mp::Process> children;
  for (int i = 0; i < n; ++i) {
    auto [reader, writer] = mp::Pipe(false);
    readers.push_back(reader);
    children.emplace_back(sum_range_and_send, writer, long{i} * 1000, long{i + 1} * 1000);
  }
  for (auto& c : children) c.start();
  CHECK(mp::active_children().size() <= static_cast<std::size_t>(n));

  std::vector<int> pending;
  for (auto& c : children) pending.push_back(c.sentinel());
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (!pending.empty()) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    for (int fd : mp::connection::wait(pending, 1s)) std::erase(pending, fd);
  }
  long total = 0;
  for (auto& r : readers) total += receive<long>(r);
  long expected = 0;
  for (long i = 0; i < n * 1000L; ++i) expected += i;
  CHECK(total == expected);
  for (auto& c : children) {
    REQUIRE(c.join(patience));
    CHECK(c.exitcode() == 0);
  }
  CHECK(mp::active_children().empty());
  CHECK(multiproc_test::zombie_children_of(::getpid()).empty());
}

TEST_CASE("process: threads start and join processes concurrently, and every child can start its own",
          "[process]") {
  constexpr int threads = 3, per_thread = 6;
  std::atomic<bool> done{false};
  // Keeps the registry of children busy, so that forks happen while another thread holds it.
  std::thread poller([&] {
    while (!done) mp::active_children();
  });
  std::vector<std::thread> starters;
  std::vector<std::vector<std::optional<int>>> codes(threads);
  for (int t = 0; t < threads; ++t) {
    starters.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        mp::Process p(start_grandchild_exiting_with, t * per_thread + i);
        p.start();
        p.join(patience);
        codes[t].push_back(p.exitcode());
      }
    });
  }
  for (auto& s : starters) s.join();
  done = true;
  poller.join();
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < per_thread; ++i) CHECK(codes[t][i] == t * per_thread + i);
  CHECK(multiproc_test::zombie_children_of(::getpid()).empty());
}

TEST_CASE("process: a child started from a thread dies when that thread ends (PR_SET_PDEATHSIG)",
          "[process]") {
  std::optional<mp::Process> p;
  std::thread starter([&] {
    p.emplace(mp::ProcessOptions{.daemon = true}, pause_forever);
    p->start();
  });
  starter.join();
  REQUIRE(p->join(patience));
  CHECK(p->exitcode() == -SIGKILL);
}

// ---- process-level functions ----------------------------------------------------------------------

TEST_CASE("process: cpu_count, start methods, init and freeze_support", "[process]") {
  CHECK(mp::cpu_count() >= 1);
  CHECK(mp::cpu_count() == static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN)));
  mp::set_start_method(mp::StartMethod::fork);
  CHECK(mp::get_start_method() == mp::StartMethod::fork);
  char arg0[] = "test_process";
  char* argv[] = {arg0, nullptr};
  mp::init(1, argv);
  mp::freeze_support();
}

// ---- whole programs ---------------------------------------------------------------------------------

TEST_CASE("process: output buffered before start() is printed once", "[process][program]") {
  auto method = GENERATE(as<std::string>{}, "fork", "spawn", "forkserver");
  INFO("start method " << method);
  SECTION("printf and std::cout synced with stdio") {
    auto [output, status] = Helper("buffered-output", method).finish();
    CHECK(status == 0);
    CHECK(occurrences(output, "printf-before-start") == 1);
    CHECK(occurrences(output, "cout-before-start") == 1);
    CHECK(occurrences(output, "child-output") == 1);
  }
  SECTION("std::cout with its own buffer") {
    auto [output, status] = Helper("buffered-output-unsynced", method).finish();
    CHECK(status == 0);
    CHECK(occurrences(output, "unsynced-cout-before-start") == 1);
    CHECK(occurrences(output, "child-output") == 1);
  }
}

TEST_CASE("process: at exit the main process waits for a non-daemonic child", "[process][program]") {
  auto method = GENERATE(as<std::string>{}, "fork", "spawn", "forkserver");
  INFO("start method " << method);
  Helper helper("exit-joins-child", method);
  helper.read_until("main-returning");
  // main() has returned; the exit function must now be waiting for the child.
  CHECK_FALSE(helper.exits_within(300ms));
  helper.write_line("finish");
  auto [output, status] = helper.finish();
  CHECK(status == 0);
  CHECK(output.find("main-returning") < output.find("child-finished"));
  CHECK(output.find("children-at-exit: 0") != std::string::npos);
}

TEST_CASE("process: at exit the main process terminates its daemonic children", "[process][program]") {
  auto method = GENERATE(as<std::string>{}, "fork", "spawn", "forkserver");
  INFO("start method " << method);
  SECTION("a daemon that obeys SIGTERM") {
    auto [output, status] = Helper("exit-terminates-daemon", method).finish();
    CHECK(status == 0);
    CHECK(output.find("daemon-got-sigterm") != std::string::npos);
    CHECK(output.find("children-at-exit: 0") != std::string::npos);
  }
  SECTION("a daemon that ignores SIGTERM is killed") {
    auto [output, status] = Helper("exit-kills-stubborn-daemon", method).finish();
    CHECK(status == 0);
    CHECK(output.find("children-at-exit: 0") != std::string::npos);
  }
}

TEST_CASE("process: a child never runs the parent's atexit handlers or static destructors",
          "[process][program]") {
  auto method = GENERATE(as<std::string>{}, "fork", "spawn", "forkserver");
  INFO("start method " << method);
  auto [output, status] = Helper("child-skips-parent-exit-handlers", method).finish();
  CHECK(status == 0);
  auto main_pid = std::to_string(number_after(output, "main pid="));
  CHECK(occurrences(output, "atexit-handler") == 1);
  CHECK(occurrences(output, "atexit-handler pid=" + main_pid) == 1);
  CHECK(occurrences(output, "static-destructor") == 1);
  CHECK(occurrences(output, "static-destructor pid=" + main_pid) == 1);
  CHECK(output.find("exitcodes: 0 3 1 4") != std::string::npos);
}

TEST_CASE("process: a child dies when its parent is killed", "[process][program]") {
  auto method = GENERATE(as<std::string>{}, "fork", "spawn", "forkserver");
  INFO("start method " << method);
  Helper helper("parent-gets-killed", method);
  pid_t child = number_after(helper.read_until("\n"), "child-pid: ");
  int child_fd = pidfd_open(child);
  REQUIRE(child_fd >= 0);
  ::kill(helper.pid(), SIGKILL);
  REQUIRE(helper.exits_within(patience));
  CHECK(readable_within(child_fd, patience));
  ::close(child_fd);
}

TEST_CASE("process: an unjoined child whose Process object is gone is reaped at exit", "[process][program]") {
  auto method = GENERATE(as<std::string>{}, "fork", "spawn", "forkserver");
  INFO("start method " << method);
  auto [output, status] = Helper("unjoined-child-reaped-at-exit", method).finish();
  CHECK(status == 0);
  CHECK(output.find("zombies-before-exit: 1") != std::string::npos);
  CHECK(output.find("zombies-at-exit: 0") != std::string::npos);
}

TEST_CASE("process: under fork, the first start in a multi-threaded process logs one warning naming forkserver",
          "[process][program]") {
  auto method = GENERATE(as<std::string>{}, "fork", "spawn", "forkserver");
  INFO("start method " << method);
  Helper helper("threaded-start-warns-once", method);
  helper.read_until("started-twice");
  helper.write_line("finish");
  auto [output, status] = helper.finish();
  CHECK(status == 0);
  CHECK(occurrences(output, "multi-threaded") == (method == "fork" ? 1u : 0u));
  if (method == "fork") CHECK(output.find("forkserver") != std::string::npos);
}

TEST_CASE("process: a parent with several threads, one holding a mutex the child takes: spawn and forkserver "
          "children take it and finish; a forked one finds it held, and only that start logs the warning",
          "[process][program]") {
  auto [output, status] = Helper("threads-hold-mutex").finish();
  INFO(output);
  CHECK(status == 0);
  CHECK(output.find("spawn exitcode 0") != std::string::npos);
  CHECK(output.find("forkserver exitcode 0") != std::string::npos);
  CHECK(output.find("fork exitcode 3") != std::string::npos);
  REQUIRE(occurrences(output, "multi-threaded") == 1);
  auto warning = output.substr(output.find("multi-threaded"));
  CHECK(warning.substr(0, warning.find('\n')).find("forkserver") != std::string::npos);
  // Logged at the fork start, the last of the three.
  CHECK(output.find("multi-threaded") > output.find("forkserver exitcode"));
}

TEST_CASE("process: a program that forgets mp::init gets ProcessError naming it from start(), within 10 s, "
          "and no process is left, under spawn and forkserver", "[process][program]") {
  auto method = GENERATE(as<std::string>{}, "spawn", "forkserver");
  auto mode = GENERATE(as<std::string>{}, "child-exits", "child-stays");
  INFO(method << " " << mode);
  auto started = std::chrono::steady_clock::now();
  auto [output, status] = Helper(mode, method, "no_init_helper").finish();
  CHECK(std::chrono::steady_clock::now() - started < 15s);
  CHECK(status == 0);
  CHECK(output.find("error: ") != std::string::npos);
  CHECK(output.find("mp::init") != std::string::npos);
  CHECK(output.find("children-left: 0") != std::string::npos);
}
