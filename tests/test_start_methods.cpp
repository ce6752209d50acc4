// Start methods spawn and forkserver beside fork: the same Process promises under each, what
// cannot cross into a fresh process, and what makes them worth having (a multi-threaded parent).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ipc_test_support.hpp"
#include "multiproc/multiproc.hpp"
#include "programs/proc_children.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::join_or_kill;

namespace {

const auto every_method = {mp::StartMethod::fork, mp::StartMethod::spawn, mp::StartMethod::forkserver};
const auto fresh_methods = {mp::StartMethod::spawn, mp::StartMethod::forkserver};

std::string method_name(mp::StartMethod m) {
  switch (m) {
  case mp::StartMethod::fork: return "fork";
  case mp::StartMethod::spawn: return "spawn";
  case mp::StartMethod::forkserver: return "forkserver";
  }
  return "?";
}

mp::ProcessOptions with(mp::StartMethod m, std::string name = {}) {
  return mp::ProcessOptions{.name = std::move(name), .start_method = m};
}

// ---- targets: small named functions, as the children run them ----

void report_call(mp::Connection out, int n, std::string s, std::vector<double> v) {
  out.send(std::to_string(n) + " " + s + " " + std::to_string(v.size()) + " " + std::to_string(v.back()));
}

void report_identity(mp::Connection out) {
  auto self = mp::current_process();
  auto parent = mp::parent_process();
  out.send(std::make_tuple(self.name, static_cast<int>(self.pid), parent ? parent->name : std::string("none"),
                           parent ? static_cast<int>(parent->pid) : 0, static_cast<int>(::getppid())));
}

void exit_with(int code) { throw mp::SystemExit{code}; }
void throw_error() { throw std::runtime_error("boom"); }
void wait_for_signal() {
  for (;;) ::pause();
}
void echo_once(mp::Connection c) { c.send(c.recv<int>() * 2); }

std::mutex g_shared_mutex;  // held by a parent thread while children start
void take_shared_mutex(mp::Connection out) {
  std::lock_guard lock(g_shared_mutex);
  out.send(std::string("took the mutex"));
}

int g_preloaded = 0;
void preload() { g_preloaded = 42; }
void report_preloaded(mp::Connection out) { out.send(g_preloaded); }

struct Unpackable {
  int x = 0;
};
void takes_unpackable(int, Unpackable) {}

struct Functor {
  void operator()() const {}
};

struct Subclass : mp::Process {
  explicit Subclass(mp::ProcessOptions options) : mp::Process(std::move(options)) {}
  void run() override {}
};

} // namespace

TEST_CASE("start methods: get_all_start_methods lists fork, spawn and forkserver; set/get round-trip",
          "[start_methods]") {
  CHECK(mp::get_all_start_methods() ==
        std::vector<mp::StartMethod>{mp::StartMethod::fork, mp::StartMethod::spawn, mp::StartMethod::forkserver});
  auto before = mp::get_start_method();
  for (auto m : every_method) {
    mp::set_start_method(m);
    CHECK(mp::get_start_method() == m);
  }
  mp::set_start_method(before);
}

TEST_CASE("start methods: a function target gets arguments of several types and a Connection, under each method",
          "[start_methods]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    auto [reader, writer] = mp::Pipe(false);
    mp::Process p(with(m), report_call, writer, 7, std::string("seven"), std::vector<double>{1.5, 2.5});
    p.start();
    REQUIRE(reader.poll(30s));
    CHECK(reader.recv<std::string>() == "7 seven 2 2.500000");
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
  }
}

TEST_CASE("start methods: a captureless lambda target and a duplex Connection work under spawn and forkserver",
          "[start_methods]") {
  for (auto m : fresh_methods) {
    INFO(method_name(m));
    auto [mine, theirs] = mp::Pipe();
    mp::Process p(with(m), [](mp::Connection c) { c.send(c.recv<int>() + 1); }, theirs);
    p.start();
    mine.send(41);
    REQUIRE(mine.poll(30s));
    CHECK(mine.recv<int>() == 42);
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
  }
}

TEST_CASE("start methods: name, pid, parent_process (the logical parent) and the OS parent under each method",
          "[start_methods]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    auto [reader, writer] = mp::Pipe(false);
    mp::Process p(with(m, "reporter"), report_identity, writer);
    p.start();
    REQUIRE(reader.poll(30s));
    auto [name, pid, parent_name, parent_pid, os_parent] = reader.recv<std::tuple<std::string, int, std::string, int, int>>();
    CHECK(name == "reporter");
    CHECK(pid == *p.pid());
    CHECK(parent_name == "MainProcess");
    CHECK(parent_pid == ::getpid());
    CHECK(os_parent == ::getpid());
    join_or_kill(p);
  }
}

TEST_CASE("start methods: exit codes, terminate, kill and the sentinel are the same under each method",
          "[start_methods]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Process ok(with(m), [] {});
    mp::Process code(with(m), exit_with, 3);
    mp::Process threw(with(m), throw_error);
    mp::Process terminated(with(m), wait_for_signal);
    mp::Process killed(with(m), wait_for_signal);
    for (auto* p : {&ok, &code, &threw, &terminated, &killed}) p->start();
    terminated.terminate();
    killed.kill();
    auto ready = mp::connection::wait(std::vector<int>{killed.sentinel()}, 30s);
    CHECK(ready.size() == 1);
    for (auto* p : {&ok, &code, &threw, &terminated, &killed}) join_or_kill(*p);
    CHECK(ok.exitcode() == 0);
    CHECK(code.exitcode() == 3);
    CHECK(threw.exitcode() == 1);
    CHECK(terminated.exitcode() == -SIGTERM);
    CHECK(killed.exitcode() == -SIGKILL);
  }
  CHECK(multiproc_test::children_of(::getpid()).size() <= 1);  // at most the fork server
}

TEST_CASE("start methods: targets and arguments that cannot cross are a ValueError from start() that names them",
          "[start_methods]") {
  for (auto m : fresh_methods) {
    INFO(method_name(m));
    int captured = 1;
    mp::Process capturing(with(m), [captured] { (void)captured; });
    CHECK_THROWS_AS(capturing.start(), mp::ValueError);
    mp::Process functor(with(m), Functor{});
    CHECK_THROWS_WITH(functor.start(), Catch::Contains("function pointer or a captureless lambda") &&
                                           Catch::Contains("Functor"));
    mp::Process unpackable(with(m), takes_unpackable, 1, Unpackable{});
    CHECK_THROWS_WITH(unpackable.start(), Catch::Contains("argument 2") && Catch::Contains("Unpackable"));
    Subclass sub(with(m));
    CHECK_THROWS_WITH(sub.start(), Catch::Contains("Subclass"));
    // Nothing started, and the objects are still usable under fork.
    CHECK_FALSE(capturing.is_alive());
  }
  CHECK(multiproc_test::children_of(::getpid()).size() <= 1);
}

TEST_CASE("start methods: under fork, capturing lambdas and subclasses keep working", "[start_methods]") {
  int captured = 5;
  mp::Process p(with(mp::StartMethod::fork), [captured] { throw mp::SystemExit{captured}; });
  p.start();
  join_or_kill(p);
  CHECK(p.exitcode() == 5);
}

TEST_CASE("start methods: a thread holding a mutex the child also takes does not hang spawn or forkserver children",
          "[start_methods]") {
  std::mutex ready_m;
  std::condition_variable ready_cv;
  bool held = false, release = false;
  std::thread holder([&] {
    std::lock_guard shared(g_shared_mutex);
    std::unique_lock lk(ready_m);
    held = true;
    ready_cv.notify_all();
    ready_cv.wait(lk, [&] { return release; });
  });
  {
    std::unique_lock lk(ready_m);
    ready_cv.wait(lk, [&] { return held; });
  }
  for (auto m : fresh_methods) {
    INFO(method_name(m));
    auto [reader, writer] = mp::Pipe(false);
    mp::Process p(with(m), take_shared_mutex, writer);
    p.start();
    REQUIRE(reader.poll(30s));
    CHECK(reader.recv<std::string>() == "took the mutex");
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
  }
  {
    std::lock_guard lk(ready_m);
    release = true;
  }
  ready_cv.notify_all();
  holder.join();
}

TEST_CASE("start methods: the fork server runs its preload before forking", "[start_methods][forkserver]") {
  mp::set_forkserver_preload(preload);
  auto [reader, writer] = mp::Pipe(false);
  mp::Process p(with(mp::StartMethod::forkserver), report_preloaded, writer);
  p.start();
  REQUIRE(reader.poll(30s));
  CHECK(reader.recv<int>() == 42);
  join_or_kill(p);
}

TEST_CASE("start methods: a killed fork server is replaced and its children live on", "[start_methods][forkserver]") {
  auto [mine, theirs] = mp::Pipe();
  mp::Process first(with(mp::StartMethod::forkserver), echo_once, theirs);
  first.start();
  auto servers = multiproc_test::children_of(::getpid());
  REQUIRE(servers.size() == 2);  // the server and its first child, both ours
  for (auto& c : servers)
    if (c.pid != *first.pid()) ::kill(c.pid, SIGKILL);
  mine.send(21);
  REQUIRE(mine.poll(30s));
  CHECK(mine.recv<int>() == 42);  // the child outlived its server
  join_or_kill(first);
  CHECK(first.exitcode() == 0);

  mp::Process second(with(mp::StartMethod::forkserver), exit_with, 7);
  second.start();
  join_or_kill(second);
  CHECK(second.exitcode() == 7);
}
