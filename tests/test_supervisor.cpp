// Claims about <multiproc/supervisor.hpp>: OTP's supervisors over process-hosted actors. The
// decisions are checked on the plain strategy struct first (no process, no actor system); then
// real supervisors over real child processes, each of which reports its start ("+id:pid") and
// its orderly end ("-id:pid") on a pipe the test reads with a deadline. A SIGKILLed child says
// nothing, so the pipe shows exactly what the supervisor stopped and started, in order.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../actors/supervisor.hpp"
#include "ipc_test_support.hpp"
#include "other_thread.hpp"
#include "programs/proc_children.hpp"
#include "multiproc/multiproc.hpp"
#include <catch2/catch.hpp>

namespace {

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::eventually;
using multiproc_test::patience;

// ---- the strategy alone ----------------------------------------------------------------------

using clock_type = mp::actors::restart_intensity::clock;
using children_t = std::vector<mp::actors::supervised>;

mp::actors::supervision_strategy strategy(mp::Strategy s, unsigned intensity = 10) {
  return {s, mp::actors::restart_intensity(intensity, 5s)};
}

// a, b, c in start order, all running but the one that ended.
children_t abc_after(const std::string& ended, mp::Restart restart_of_ended = mp::Restart::permanent,
                     mp::Restart restart_of_others = mp::Restart::permanent) {
  children_t out;
  for (std::string id : {"a", "b", "c"})
    out.push_back({id, id == ended ? restart_of_ended : restart_of_others, id != ended});
  return out;
}

using ids = std::vector<std::string>;

TEST_CASE("supervisor: strategy: one_for_one restarts only the child that ended", "[supervisor][strategy]") {
  auto plan = strategy(mp::Strategy::one_for_one).child_ended(abc_after("b"), "b", 1, clock_type::now());
  CHECK_FALSE(plan.give_up);
  CHECK(plan.stop.empty());
  CHECK(plan.forget.empty());
  CHECK(plan.start == ids{"b"});
}

TEST_CASE("supervisor: strategy: one_for_all stops the others in reverse start order, then starts all in start order",
          "[supervisor][strategy]") {
  auto plan = strategy(mp::Strategy::one_for_all).child_ended(abc_after("b"), "b", 1, clock_type::now());
  CHECK(plan.stop == ids{"c", "a"});
  CHECK(plan.start == ids{"a", "b", "c"});
}

TEST_CASE("supervisor: strategy: rest_for_one restarts the ended child and those started after it",
          "[supervisor][strategy]") {
  auto plan = strategy(mp::Strategy::rest_for_one).child_ended(abc_after("b"), "b", 1, clock_type::now());
  CHECK(plan.stop == ids{"c"});
  CHECK(plan.start == ids{"b", "c"});
}

TEST_CASE("supervisor: strategy: a permanent child comes back after any exit", "[supervisor][strategy]") {
  for (int code : {0, 1, -9}) {
    auto plan = strategy(mp::Strategy::one_for_one).child_ended(abc_after("a"), "a", code, clock_type::now());
    CHECK(plan.start == ids{"a"});
  }
}

TEST_CASE("supervisor: strategy: a transient child comes back after exit code != 0 only, and then takes its siblings along",
          "[supervisor][strategy]") {
  auto s = strategy(mp::Strategy::one_for_all);
  auto clean = s.child_ended(abc_after("b", mp::Restart::transient), "b", 0, clock_type::now());
  CHECK(clean.stop.empty());
  CHECK(clean.start.empty());
  CHECK(clean.forget.empty());
  auto crash = s.child_ended(abc_after("b", mp::Restart::transient), "b", -9, clock_type::now());
  CHECK(crash.stop == ids{"c", "a"});
  CHECK(crash.start == ids{"a", "b", "c"});
}

TEST_CASE("supervisor: strategy: a temporary child never comes back and is forgotten, even as a sibling",
          "[supervisor][strategy]") {
  auto alone = strategy(mp::Strategy::one_for_all).child_ended(abc_after("b", mp::Restart::temporary), "b", 1,
                                                               clock_type::now());
  CHECK(alone.stop.empty());
  CHECK(alone.start.empty());
  CHECK(alone.forget == ids{"b"});
  auto sibling = strategy(mp::Strategy::one_for_all)
                     .child_ended(abc_after("a", mp::Restart::permanent, mp::Restart::temporary), "a", 1,
                                  clock_type::now());
  CHECK(sibling.stop == ids{"c", "b"});
  CHECK(sibling.forget == ids{"b", "c"});
  CHECK(sibling.start == ids{"a"});
}

TEST_CASE("supervisor: strategy: more than intensity restarts within period gives up and stops every running child",
          "[supervisor][strategy]") {
  auto s = strategy(mp::Strategy::one_for_one, 1);
  auto t0 = clock_type::now();
  CHECK_FALSE(s.child_ended(abc_after("b"), "b", 1, t0).give_up);
  auto second = s.child_ended(abc_after("b"), "b", 1, t0 + 1s);
  CHECK(second.give_up);
  CHECK(second.stop == ids{"c", "a"});
  CHECK(second.start.empty());
  auto spread = strategy(mp::Strategy::one_for_one, 1);
  for (int i = 0; i < 5; ++i) CHECK_FALSE(spread.child_ended(abc_after("b"), "b", 1, t0 + std::chrono::seconds(6 * i)).give_up);
  auto none = strategy(mp::Strategy::one_for_one, 0);
  CHECK(none.child_ended(abc_after("a"), "a", 1, t0).give_up);
}

TEST_CASE("supervisor: strategy: an exit that restarts nothing does not count against the intensity",
          "[supervisor][strategy]") {
  auto s = strategy(mp::Strategy::one_for_one, 1);
  auto t0 = clock_type::now();
  for (int i = 0; i < 3; ++i)
    CHECK_FALSE(s.child_ended(abc_after("b", mp::Restart::transient), "b", 0, t0).give_up);
  CHECK_FALSE(s.child_ended(abc_after("b"), "b", 1, t0).give_up);
}

// ---- real supervisors ------------------------------------------------------------------------

struct Ping {
  int unused = 0;
  MSGPACK_DEFINE(unused);
};
struct Quit {
  int code = 0;
  MSGPACK_DEFINE(code);
};
struct Hang {  // a handler that never returns: the child cannot take a stop request
  int unused = 0;
  MSGPACK_DEFINE(unused);
};

void say(int fd, const std::string& line) {
  std::string out = line + "\n";
  (void)!::write(fd, out.data(), out.size());  // < PIPE_BUF: one atomic write
}

// Says "-id:pid" when the actor ends in order (stopped, quit, crashed), not when SIGKILLed.
struct goodbye {
  std::string id;
  int fd;
  ~goodbye() { say(fd, "-" + id + ":" + std::to_string(::getpid())); }
};

mp::Behavior worker(mp::ActorContext& ctx, std::string id, int log_fd) {
  say(log_fd, "+" + id + ":" + std::to_string(::getpid()));
  auto bye = std::make_shared<goodbye>(id, log_fd);
  return {
      [](const Ping&) { return static_cast<int>(::getpid()); },
      [&ctx](const Quit& q) { ctx.quit(q.code); },
      [bye](const Hang&) {
        say(bye->fd, "hanging");
        for (;;) ::pause();
      },
  };
}

// Holds each new incarnation of a gated_worker in its init until the test lets one through (or
// the gate goes, and with it every wait).
class gate {
public:
  gate() { REQUIRE(::pipe(fds_) == 0); }
  ~gate() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  int reader() const { return fds_[0]; }
  void let_one_through() { REQUIRE(::write(fds_[1], "x", 1) == 1); }

private:
  int fds_[2];
};

// Says "gate:pid" once in its init, then waits at the gate before it becomes a worker.
mp::Behavior gated_worker(mp::ActorContext& ctx, std::string id, int log_fd, int gate_fd) {
  say(log_fd, "gate:" + std::to_string(::getpid()));
  char byte;
  (void)!::read(gate_fd, &byte, 1);
  return worker(ctx, std::move(id), log_fd);
}

// The children's pipe: each line one event, read with a deadline.
class event_log {
public:
  event_log() {
    REQUIRE(::pipe2(fds_, O_CLOEXEC) == 0);
    ::fcntl(fds_[1], F_SETFD, 0);  // children write to it
  }
  ~event_log() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  int writer() const { return fds_[1]; }

  // The next event, "" when none comes within `wait`.
  std::string next(std::chrono::milliseconds wait = std::chrono::duration_cast<std::chrono::milliseconds>(patience)) {
    auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        auto line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        if (auto colon = line.find(':'); colon != std::string::npos) pids_.insert(std::stoi(line.substr(colon + 1)));
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fds_[0], POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return "";
      char chunk[512];
      auto n = ::read(fds_[0], chunk, sizeof chunk);
      if (n > 0) buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  // Whatever is already there (or comes within `wait`), so that every pid it names is known.
  void drain(std::chrono::milliseconds wait = 200ms) {
    while (!next(wait).empty()) {
    }
  }
  // Every child pid any event named.
  const std::set<int>& pids() const { return pids_; }

private:
  int fds_[2];
  std::string buffer_;
  std::set<int> pids_;
};

std::string tag(const std::string& event) { return event.substr(0, event.find(':')); }
int pid_of(const std::string& event) { return std::stoi(event.substr(event.find(':') + 1)); }

ids tags(event_log& log, std::size_t count) {
  ids out;
  for (std::size_t i = 0; i < count; ++i) out.push_back(tag(log.next()));
  return out;
}

mp::ChildSpec worker_child(const std::string& id, event_log& log, mp::Restart restart = mp::Restart::permanent) {
  auto spec = mp::child(id, worker, id, log.writer());
  spec.restart = restart;
  return spec;
}

std::vector<mp::ChildSpec> abc(event_log& log, mp::Restart restart = mp::Restart::permanent) {
  return {worker_child("a", log, restart), worker_child("b", log, restart), worker_child("c", log, restart)};
}

bool process_gone(int pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

void kill9(const mp::ActorRef& ref) {
  REQUIRE(ref);
  REQUIRE(::kill(ref.pid(), SIGKILL) == 0);
}

mp::ChildSpec gated_child(const std::string& id, event_log& log, gate& g) {
  auto spec = mp::child(id, gated_worker, id, log.writer(), g.reader());
  spec.shutdown = 1s;  // an incarnation held at the gate cannot take a stop request
  return spec;
}

mp::SupervisorOptions with(mp::Strategy strategy, unsigned intensity = 10) {
  return {.strategy = strategy, .intensity = intensity, .period = std::chrono::milliseconds(5000)};
}

mp::SupervisorOptions with_standby(mp::Strategy strategy) {
  auto options = with(strategy);
  options.standby = true;
  return options;
}

std::set<int> our_children() {
  std::set<int> out;
  for (auto& c : multiproc_test::children_of(::getpid())) out.insert(c.pid);
  return out;
}

// The standby of the one running child: the other child process of ours, once it is there.
int standby_beside(const mp::ActorRef& running) {
  std::set<int> children;
  REQUIRE(eventually([&] { return (children = our_children()).size() == 2; }));
  children.erase(running.pid());
  REQUIRE(children.size() == 1);
  return *children.begin();
}

TEST_CASE("supervisor: starts its children in order and lists them in start order", "[supervisor]") {
  event_log log;
  mp::Supervisor sup(with(mp::Strategy::one_for_one), abc(log));
  CHECK(tags(log, 3) == ids{"+a", "+b", "+c"});
  auto children = sup.which_children();
  REQUIRE(children.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(children[i].id == std::string(1, static_cast<char>('a' + i)));
    CHECK(children[i].actor.request<int>(Ping{}, patience) == children[i].actor.pid());
    CHECK(children[i].restarts == 0);
    CHECK_FALSE(children[i].is_supervisor);
  }
}

TEST_CASE("supervisor: one_for_one restarts only the child that ended", "[supervisor]") {
  event_log log;
  mp::Supervisor sup(with(mp::Strategy::one_for_one), abc(log));
  tags(log, 3);
  auto a = sup.child("a"), b = sup.child("b"), c = sup.child("c");
  kill9(b);
  CHECK(tags(log, 1) == ids{"+b"});
  CHECK(log.next(300ms).empty());  // nobody else stopped or started
  auto b2 = sup.child("b");
  REQUIRE(b2);
  CHECK(b2 != b);
  CHECK(b2.request<int>(Ping{}, patience) == b2.pid());
  CHECK(sup.child("a") == a);
  CHECK(sup.child("c") == c);
  CHECK(sup.which_children()[1].restarts == 1);
}

TEST_CASE("supervisor: one_for_all stops the others in reverse start order, then starts all in start order",
          "[supervisor]") {
  event_log log;
  mp::Supervisor sup(with(mp::Strategy::one_for_all), abc(log));
  tags(log, 3);
  kill9(sup.child("b"));
  CHECK(tags(log, 5) == ids{"-c", "-a", "+a", "+b", "+c"});
  for (auto& info : sup.which_children()) CHECK(info.actor.request<int>(Ping{}, patience) == info.actor.pid());
}

TEST_CASE("supervisor: rest_for_one restarts the ended child and those started after it", "[supervisor]") {
  event_log log;
  mp::Supervisor sup(with(mp::Strategy::rest_for_one), abc(log));
  tags(log, 3);
  auto a = sup.child("a");
  kill9(sup.child("b"));
  CHECK(tags(log, 3) == ids{"-c", "+b", "+c"});
  CHECK(sup.child("a") == a);
}

TEST_CASE("supervisor: a permanent child comes back even after exit code 0", "[supervisor]") {
  event_log log;
  mp::Supervisor sup(with(mp::Strategy::one_for_one), {worker_child("a", log)});
  tags(log, 1);
  sup.child("a").send(Quit{0});
  CHECK(tags(log, 2) == ids{"-a", "+a"});
}

TEST_CASE("supervisor: a transient child comes back after exit code != 0, not after exit code 0", "[supervisor]") {
  event_log log;
  mp::Supervisor sup(with(mp::Strategy::one_for_one), {worker_child("t", log, mp::Restart::transient)});
  tags(log, 1);
  sup.child("t").send(Quit{3});
  CHECK(tags(log, 2) == ids{"-t", "+t"});
  sup.child("t").send(Quit{0});
  CHECK(tags(log, 1) == ids{"-t"});
  CHECK(log.next(300ms).empty());
  REQUIRE(sup.which_children().size() == 1);  // kept, down
  CHECK_FALSE(sup.child("t"));
  auto again = sup.restart_child("t");
  CHECK(again.request<int>(Ping{}, patience) == again.pid());
}

TEST_CASE("supervisor: a temporary child never comes back and is forgotten", "[supervisor]") {
  event_log log;
  mp::Supervisor sup(with(mp::Strategy::one_for_all),
                     {worker_child("keep", log), worker_child("tmp", log, mp::Restart::temporary)});
  tags(log, 2);
  auto keep = sup.child("keep");
  kill9(sup.child("tmp"));
  CHECK(log.next(300ms).empty());  // no sibling touched either
  auto children = sup.which_children();
  REQUIRE(children.size() == 1);
  CHECK(children[0].id == "keep");
  CHECK(sup.child("keep") == keep);
  CHECK_THROWS_AS(sup.child("tmp"), mp::ValueError);
}

TEST_CASE("supervisor: more than intensity restarts within period gives up and stops every child", "[supervisor]") {
  event_log log;
  mp::Supervisor sup(with(mp::Strategy::one_for_one, 1), abc(log));
  tags(log, 3);
  CHECK_FALSE(sup.broken());
  kill9(sup.child("b"));
  CHECK(tags(log, 1) == ids{"+b"});
  kill9(sup.child("b"));
  REQUIRE(sup.join(patience));
  CHECK(sup.broken());
  CHECK(tags(log, 2) == ids{"-c", "-a"});
  log.drain();
  for (int pid : log.pids()) CHECK(process_gone(pid));
  for (auto& info : sup.which_children()) CHECK_FALSE(info.actor);
  CHECK_THROWS_AS(sup.start_child(worker_child("d", log)), mp::ValueError);
}

TEST_CASE("supervisor: stop() stops the children in reverse start order and ends it", "[supervisor]") {
  event_log log;
  mp::Supervisor sup(with(mp::Strategy::one_for_one), abc(log));
  tags(log, 3);
  CHECK_FALSE(sup.join(0s));
  sup.stop();
  CHECK(tags(log, 3) == ids{"-c", "-b", "-a"});
  CHECK(sup.join(0s));
  CHECK_FALSE(sup.broken());
  for (int pid : log.pids()) CHECK(process_gone(pid));
  sup.stop();  // again: nothing to do
}

TEST_CASE("supervisor: stop and destruction on another thread than the one that made it return",
          "[supervisor]") {
  event_log log;
  auto sup = std::make_unique<mp::Supervisor>(with(mp::Strategy::one_for_one), abc(log));
  tags(log, 3);
  multiproc_test::run_on_another_thread([&] {
    sup->stop();
    sup.reset();
  }, std::chrono::seconds(30), "Supervisor::stop and ~Supervisor");
  CHECK(tags(log, 3) == ids{"-c", "-b", "-a"});
  for (int pid : log.pids()) CHECK(process_gone(pid));
}

TEST_CASE("supervisor: a child that ignores stop is killed after its shutdown grace", "[supervisor]") {
  event_log log;
  auto stubborn = worker_child("stubborn", log);
  stubborn.shutdown = 300ms;
  mp::Supervisor sup(with(mp::Strategy::one_for_one), {worker_child("polite", log), stubborn});
  tags(log, 2);
  sup.child("stubborn").send(Hang{});
  REQUIRE(log.next() == "hanging");
  auto t0 = std::chrono::steady_clock::now();
  sup.stop();
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took >= 300ms);
  CHECK(took < patience);
  CHECK(tags(log, 1) == ids{"-polite"});  // the stubborn one was killed: it said nothing
  for (int pid : log.pids()) CHECK(process_gone(pid));
}

TEST_CASE("supervisor: a restarted child takes its name again, so whereis finds the new incarnation", "[supervisor]") {
  event_log log;
  auto named = worker_child("kv", log);
  named.name = "supervisor-test-kv-" + std::to_string(::getpid());
  mp::Supervisor sup(with(mp::Strategy::one_for_one), {named});
  tags(log, 1);
  auto first = mp::whereis(named.name);
  CHECK(first == sup.child("kv"));
  kill9(first);
  CHECK(tags(log, 1) == ids{"+kv"});
  auto second = mp::whereis(named.name);
  REQUIRE(second);
  CHECK(second != first);
  CHECK(second == sup.child("kv"));
  CHECK(second.request<int>(Ping{}, patience) == second.pid());
}

TEST_CASE("supervisor: while a named child restarts, whereis waits for the new incarnation instead of finding nobody",
          "[supervisor]") {
  event_log log;
  auto named = worker_child("kv", log);
  named.name = "supervisor-test-held-" + std::to_string(::getpid());
  auto slow = worker_child("slow", log);
  slow.shutdown = 1s;  // it will ignore stop: kv's restart waits this long behind it
  mp::Supervisor sup(with(mp::Strategy::one_for_all), {named, slow});
  tags(log, 2);
  sup.child("slow").send(Hang{});
  REQUIRE(log.next() == "hanging");
  auto first = sup.child("kv");
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, first.pid(), 0));
  REQUIRE(pidfd >= 0);
  kill9(first);
  pollfd ended{pidfd, POLLIN, 0};
  REQUIRE(::poll(&ended, 1, static_cast<int>(std::chrono::milliseconds(patience).count())) == 1);
  ::close(pidfd);
  // kv is gone, and its next incarnation starts only once slow's grace ran out.
  auto second = mp::whereis(named.name);
  REQUIRE(second);
  CHECK(second != first);
  CHECK(second == sup.child("kv"));
  CHECK(second.request<int>(Ping{}, patience) == second.pid());
  sup.terminate_child("kv");  // down for good: the name is free again
  CHECK_FALSE(mp::whereis(named.name));
}

TEST_CASE("supervisor: with standby, a restart opens the child's standby, a process started before the crash, "
          "and stop() leaves no process",
          "[supervisor][standby]") {
  event_log log;
  mp::Supervisor sup(with_standby(mp::Strategy::one_for_one), {worker_child("a", log)});
  CHECK(tags(log, 1) == ids{"+a"});
  auto a = sup.child("a");
  int standby = standby_beside(a);
  CHECK(log.next(100ms).empty());  // the standby waits before its init
  kill9(a);
  CHECK(log.next() == "+a:" + std::to_string(standby));
  auto a2 = sup.child("a");
  CHECK(a2.pid() == standby);
  CHECK(a2.request<int>(Ping{}, patience) == standby);
  int next_standby = standby_beside(a2);  // made again for the next crash
  sup.stop();
  CHECK(tags(log, 1) == ids{"-a"});
  CHECK(process_gone(next_standby));
  CHECK(our_children().empty());
}

TEST_CASE("supervisor: with standby, a child down for good frees its name at once and keeps no standby",
          "[supervisor][standby]") {
  event_log log;
  auto named = worker_child("kv", log);
  named.name = "supervisor-test-standby-" + std::to_string(::getpid());
  mp::Supervisor sup(with_standby(mp::Strategy::one_for_one), {named});
  tags(log, 1);
  int standby = standby_beside(sup.child("kv"));
  sup.terminate_child("kv");
  CHECK(tags(log, 1) == ids{"-kv"});
  CHECK_FALSE(mp::whereis(named.name));  // no standby holds a copy of the name's socket
  CHECK(process_gone(standby));
  auto kv = sup.restart_child("kv");
  CHECK(tags(log, 1) == ids{"+kv"});
  CHECK(mp::whereis(named.name) == kv);
  standby_beside(kv);
  sup.terminate_child("kv");
  sup.delete_child("kv");
  CHECK(our_children().empty());
}

TEST_CASE("supervisor: with standby, a standby killed while it waits gives way to a plain start at the next restart",
          "[supervisor][standby]") {
  event_log log;
  mp::Supervisor sup(with_standby(mp::Strategy::one_for_one), {worker_child("a", log)});
  tags(log, 1);
  auto a = sup.child("a");
  int standby = standby_beside(a);
  int standby_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, standby, 0));
  REQUIRE(standby_pidfd >= 0);
  REQUIRE(::kill(standby, SIGKILL) == 0);
  // Dead before the crash it was meant for (one dying while it is opened counts as a crash of
  // the new incarnation: a second restart).
  pollfd ended{standby_pidfd, POLLIN, 0};
  REQUIRE(::poll(&ended, 1, static_cast<int>(std::chrono::milliseconds(patience).count())) == 1);
  ::close(standby_pidfd);
  kill9(a);
  auto started = log.next();
  CHECK(tag(started) == "+a");
  CHECK(pid_of(started) != standby);
  auto a2 = sup.child("a");
  CHECK(a2.request<int>(Ping{}, patience) == pid_of(started));
  CHECK(sup.which_children()[0].restarts == 1);
  CHECK(process_gone(standby));
}

TEST_CASE("supervisor: start_child, terminate_child, restart_child and delete_child manage children by id",
          "[supervisor]") {
  event_log log;
  mp::Supervisor sup;
  auto a = sup.start_child(worker_child("a", log));
  CHECK(tags(log, 1) == ids{"+a"});
  CHECK(a.request<int>(Ping{}, patience) == a.pid());
  CHECK_THROWS_AS(sup.start_child(worker_child("a", log)), mp::ValueError);
  CHECK_THROWS_AS(sup.delete_child("a"), mp::ValueError);   // running
  CHECK_THROWS_AS(sup.restart_child("a"), mp::ValueError);  // running
  sup.terminate_child("a");
  CHECK(tags(log, 1) == ids{"-a"});
  CHECK_FALSE(sup.child("a"));
  CHECK(log.next(300ms).empty());  // terminated on purpose: not restarted
  auto a2 = sup.restart_child("a");
  CHECK(tags(log, 1) == ids{"+a"});
  CHECK(a2 != a);
  sup.terminate_child("a");
  sup.delete_child("a");
  CHECK(sup.which_children().empty());
  CHECK_THROWS_AS(sup.child("a"), mp::ValueError);
  CHECK_THROWS_AS(sup.terminate_child("nobody"), mp::ValueError);
  CHECK_THROWS_AS(sup.start_child(mp::ChildSpec{.id = "empty"}), mp::ValueError);
  CHECK_THROWS_AS(mp::Supervisor({}, {worker_child("x", log), worker_child("x", log)}), mp::ValueError);
}

TEST_CASE("supervisor: a child supervisor that gives up ends non-zero and its parent restarts it (two-level tree)",
          "[supervisor]") {
  event_log log;
  mp::Supervisor top(with(mp::Strategy::one_for_one),
                     {worker_child("kv", log),
                      mp::supervisor_child("sub", with(mp::Strategy::one_for_one, 0),
                                           {worker_child("w1", log), worker_child("w2", log)})});
  std::vector<std::string> started{log.next(), log.next(), log.next()};
  REQUIRE(ids{tag(started[0]), tag(started[1]), tag(started[2])} == ids{"+kv", "+w1", "+w2"});
  auto kv = top.child("kv");
  auto sub = top.child("sub");
  REQUIRE(top.which_children()[1].is_supervisor);
  // The sub-supervisor tolerates no restart: one crash of w1 makes it give up.
  REQUIRE(::kill(pid_of(started[1]), SIGKILL) == 0);
  // It stops the other worker, ends with exit code 1, and the top restarts it with fresh workers.
  auto events = tags(log, 3);
  CHECK(events == ids{"-w2", "+w1", "+w2"});
  auto sub2 = top.child("sub");
  REQUIRE(sub2);
  CHECK(sub2 != sub);
  CHECK(process_gone(sub.pid()));
  CHECK(top.child("kv") == kv);
  CHECK(top.which_children()[1].restarts == 1);
  CHECK_FALSE(top.broken());
}

TEST_CASE("supervisor: no process is left after stop() or destruction, even with children mid-restart",
          "[supervisor]") {
  bool standby = GENERATE(false, true);
  INFO("standby " << standby);
  auto options = [&](mp::Strategy strategy) {
    auto o = with(strategy);
    o.standby = standby;
    return o;
  };
  event_log log;
  gate g;  // outlives the supervisors: its end releases any incarnation still at it
  std::set<int> supervisors;
  SECTION("destruction while a restarted child is still in its init") {
    g.let_one_through();
    mp::Supervisor sup(options(mp::Strategy::one_for_all), {gated_child("a", log, g), worker_child("b", log)});
    REQUIRE(tags(log, 3) == ids{"gate", "+a", "+b"});
    kill9(sup.child("a"));
    REQUIRE(tags(log, 2) == ids{"-b", "gate"});  // b stopped; a's new incarnation held at the gate
    g.let_one_through();  // the supervisor is still inside the restart (b is yet to start)
  }
  SECTION("destruction right after a kill") {
    mp::Supervisor sup(options(mp::Strategy::one_for_all), abc(log));
    tags(log, 3);
    kill9(sup.child("a"));
  }
  SECTION("stop() right after a kill, in a tree") {
    mp::Supervisor sup(options(mp::Strategy::one_for_one),
                       {worker_child("a", log),
                        mp::supervisor_child("sub", options(mp::Strategy::one_for_all), abc(log))});
    tags(log, 4);
    supervisors.insert(sup.child("sub").pid());
    kill9(sup.child("a"));
    sup.stop();
  }
  log.drain();
  CHECK(log.pids().size() >= 3);
  for (int pid : log.pids()) CHECK(process_gone(pid));
  for (int pid : supervisors) CHECK(process_gone(pid));
  CHECK(our_children().empty());  // standbys included
}

} // namespace
