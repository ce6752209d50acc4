// Start methods spawn and forkserver beside fork: the same Process promises under each, what
// cannot cross into a fresh process, and what makes them worth having (a multi-threaded parent).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
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

// Set by the parent before it starts a pool: a forked worker sees it, a spawned one (a fresh run
// of the program) or a fork server's (forked from one) does not.
int g_parent_mark = 0;
struct WorkerView {
  int pid = 0;
  int mark = 0;
  std::string name;
  MSGPACK_DEFINE(pid, mark, name);
};
WorkerView view_worker(int) { return {static_cast<int>(::getpid()), g_parent_mark, mp::current_process().name}; }
int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
int g_initialized = 0;
void initialize_worker() { g_initialized = 1; }
int initialized(int) { return g_initialized; }

struct Add {
  int n = 0;
  MSGPACK_DEFINE(n);
};
struct Get {
  int unused = 0;
  MSGPACK_DEFINE(unused);
};
mp::Behavior counter(mp::ActorContext&, int start) {
  auto n = std::make_shared<int>(start);
  return {[n](const Add& a) { *n += a.n; }, [n](const Get&) { return *n; }};
}

// Uses a manager's dict and an actor handed over as arguments, reports what it saw.
void use_proxy_and_actor(mp::DictProxy<std::string, int> d, mp::ActorRef actor, mp::Connection out) {
  d.set("child", d.at("parent") + 1);
  actor.send(Add{5});
  out.send(actor.request<int>(Get{}, 30s));
}

struct Subclass : mp::Process {
  explicit Subclass(mp::ProcessOptions options) : mp::Process(std::move(options)) {}
  void run() override {}
};

// Reports, through the queue it carries, the members it got, its name, and whether its own
// object is the running process.
class Reporter : public mp::Process {
public:
  Reporter() = default;
  Reporter(mp::ProcessOptions options, mp::Queue<std::string> out, int n, std::string word)
      : mp::Process(std::move(options)), out_(std::move(out)), n_(n), word_(std::move(word)), unlisted_(9) {}
  void run() override {
    bool current = is_alive() && pid() == mp::current_process().pid;
    out_.put(std::to_string(n_) + " " + word_ + " " + std::to_string(unlisted_) + " " + name() + " " +
             (current ? "current" : "not current"));
  }

private:
  mp::Queue<std::string> out_;
  int n_ = 0;
  std::string word_;
  int unlisted_ = 1;  // not listed: a fresh child keeps this default
  MULTIPROC_SPAWNABLE(Reporter, out_, n_, word_)
};

class DerivedReporter : public Reporter {
  using Reporter::Reporter;
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
    CHECK_THROWS_WITH(sub.start(), Catch::Contains("Subclass") && Catch::Contains("MULTIPROC_SPAWNABLE"));
    DerivedReporter derived(with(m), mp::Queue<std::string>(), 1, "one");
    CHECK_THROWS_WITH(derived.start(), Catch::Contains("DerivedReporter") && Catch::Contains("MULTIPROC_SPAWNABLE"));
    // Nothing started, and the objects are still usable under fork.
    CHECK_FALSE(capturing.is_alive());
  }
  CHECK(multiproc_test::children_of(::getpid()).size() <= 1);
}

TEST_CASE("start methods: a MULTIPROC_SPAWNABLE subclass runs run() with its listed members, a Queue among them, "
          "under each method",
          "[start_methods]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Queue<std::string> out;
    Reporter p(with(m, "reporter"), out, 7, "seven");
    p.start();
    auto report = out.get(30s);
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
    // Under fork the child runs the parent's copy, unlisted member included.
    CHECK(report == (m == mp::StartMethod::fork ? "7 seven 9 reporter current" : "7 seven 1 reporter current"));
  }
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

TEST_CASE("start methods: a Pool under spawn and forkserver maps and apply_asyncs in workers that are not forks of the parent",
          "[start_methods][pool]") {
  g_parent_mark = 7;
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::PoolOptions options;
    options.processes = 2;
    options.start_method = m;
    mp::Pool pool(options);
    std::vector<int> xs{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    CHECK(pool.map(square, xs, 1) == std::vector<int>{1, 4, 9, 16, 25, 36, 49, 64, 81, 100});
    CHECK(pool.apply_async(add, 40, 2).get(30s) == 42);
    CHECK(pool.apply_async([](int a, int b) { return a * b; }, 6, 7).get(30s) == 42);
    auto pids = pool.worker_pids();
    for (const auto& view : pool.map(view_worker, std::vector<int>(8, 0), 1)) {
      CHECK(std::find(pids.begin(), pids.end(), view.pid) != pids.end());
      CHECK(view.mark == (m == mp::StartMethod::fork ? 7 : 0));  // the parent's memory only by fork
      CHECK(view.name.rfind(m == mp::StartMethod::fork    ? "ForkPoolWorker-"
                            : m == mp::StartMethod::spawn ? "SpawnPoolWorker-"
                                                          : "ForkServerPoolWorker-",
                            0) == 0);
    }
    pool.close();
    pool.join();
  }
  g_parent_mark = 0;
  CHECK(multiproc_test::children_of(::getpid()).size() <= 1);  // at most the fork server
}

TEST_CASE("start methods: a spawn or forkserver Pool runs a function-pointer initializer and refuses a capturing one",
          "[start_methods][pool]") {
  for (auto m : fresh_methods) {
    INFO(method_name(m));
    mp::PoolOptions options;
    options.processes = 1;
    options.start_method = m;
    options.initializer = initialize_worker;
    mp::Pool pool(options);
    CHECK(pool.apply_async(initialized, 0).get(30s) == 1);
    pool.terminate();

    int state = 1;
    options.initializer = [state] { g_initialized = state; };
    CHECK_THROWS_WITH(mp::Pool(options), Catch::Contains("PoolOptions::initializer") && Catch::Contains("function pointer"));
  }
  CHECK(multiproc_test::children_of(::getpid()).size() <= 1);
}

TEST_CASE("start methods: a Manager whose server started by spawn or forkserver serves a dict and a list",
          "[start_methods][manager]") {
  for (auto m : fresh_methods) {
    INFO(method_name(m));
    mp::Manager manager(mp::ManagerOptions{.start_method = m});
    auto d = manager.dict<std::string, int>();
    auto l = manager.list<int>();
    d.set("a", 1);
    l.append(2);
    l.append(3);
    CHECK(d.at("a") == 1);
    CHECK(l.copy() == std::vector<int>{2, 3});
    manager.shutdown();
  }
  CHECK(multiproc_test::children_of(::getpid()).size() <= 1);
}

TEST_CASE("start methods: a BaseManager with a registered class refuses spawn with a ValueError naming the typeid",
          "[start_methods][manager]") {
  struct Counter {
    int n = 0;
    int get() const { return n; }
  };
  mp::BaseManager manager("", "key", mp::ManagerOptions{.start_method = mp::StartMethod::spawn});
  manager.register_class<Counter>("Counter").expose("get", &Counter::get);
  CHECK_THROWS_WITH(manager.start(), Catch::Contains("'Counter'") && Catch::Contains("registered class"));
  CHECK(multiproc_test::children_of(::getpid()).size() <= 1);
}

TEST_CASE("start methods: an actor spawned under spawn or forkserver answers a request", "[start_methods][actor]") {
  for (auto m : fresh_methods) {
    INFO(method_name(m));
    auto actor = mp::spawn(mp::ActorOptions{.start_method = m}, counter, 10);
    actor.send(Add{5});
    CHECK(actor.request<int>(Get{}, 30s) == 15);
    auto lambda_actor = mp::spawn(mp::ActorOptions{.start_method = m},
                                  [](mp::ActorContext& ctx) { return counter(ctx, 1); });
    CHECK(lambda_actor.request<int>(Get{}, 30s) == 1);
    actor.stop();
    lambda_actor.stop();
    int captured = 0;
    CHECK_THROWS_WITH(mp::spawn(mp::ActorOptions{.start_method = m},
                                [captured](mp::ActorContext& ctx) { return counter(ctx, captured); }),
                      Catch::Contains("captureless lambda"));
  }
  CHECK(multiproc_test::children_of(::getpid()).size() <= 1);
}

TEST_CASE("start methods: a manager proxy and an ActorRef cross into a spawn or forkserver Process", "[start_methods]") {
  mp::Manager manager;
  auto d = manager.dict<std::string, int>();
  d.set("parent", 41);
  auto actor = mp::spawn(counter, 0);
  for (auto m : fresh_methods) {
    INFO(method_name(m));
    auto [reader, writer] = mp::Pipe(false);
    mp::Process p(with(m), use_proxy_and_actor, d, actor, writer);
    p.start();
    REQUIRE(reader.poll(30s));
    CHECK(reader.recv<int>() == (m == mp::StartMethod::spawn ? 5 : 10));
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
    CHECK(d.at("child") == 42);
  }
  actor.stop();
}
