// Library handles passed to a Process arrive in the child as the same object under every start
// method: under spawn and forkserver each is reduced to its descriptors and a header, which cross
// with SCM_RIGHTS and are rebuilt there (detail/reduction.hpp). Each test drives one handle type
// from both sides, so that the child acting on a copy of its own would fail it.
#include <dirent.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "ipc_test_support.hpp"
#include "multiproc/multiproc.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::join_or_kill;
using multiproc_test::patience;

namespace {

const auto every_method = {mp::StartMethod::fork, mp::StartMethod::spawn, mp::StartMethod::forkserver};

std::string method_name(mp::StartMethod m) {
  switch (m) {
  case mp::StartMethod::fork: return "fork";
  case mp::StartMethod::spawn: return "spawn";
  case mp::StartMethod::forkserver: return "forkserver";
  }
  return "?";
}

mp::ProcessOptions with(mp::StartMethod m) { return mp::ProcessOptions{.start_method = m}; }

// Starts target(args...) under m, joins it and checks that it exited with 0.
template <class F, class... Args>
void run_child(mp::StartMethod m, F target, Args... args) {
  mp::Process p(with(m), target, std::move(args)...);
  p.start();
  join_or_kill(p);
  CHECK(p.exitcode() == 0);
}

std::size_t open_fds() {
  std::size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (auto* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the directory's own descriptor
}

template <class T>
T received(mp::Connection& c) {
  REQUIRE(c.poll(patience));
  return c.recv<T>();
}

// ---- child targets ----

void double_it(mp::Queue<int> in, mp::Queue<std::string> out) { out.put(std::to_string(in.get(patience) * 2)); }

// The same queue received twice is one queue in the child: dropping one copy keeps the other working.
void put_through_both(mp::Queue<int> a, mp::Queue<int> b) {
  a.put(1);
  { auto dropped = std::move(b); }
  a.put(2);
}

void echo_simple(mp::SimpleQueue<int> in, mp::SimpleQueue<int> out) { out.put(in.get() + 1); }

void finish_tasks(mp::JoinableQueue<int> tasks, int n) {
  for (int i = 0; i < n; ++i) {
    tasks.get(patience);
    tasks.task_done();
  }
}

// Reports whether the lock was free, then takes it (blocking) and says so.
template <class L>
void contend(L lock, mp::Connection out) {
  out.send(lock.try_acquire());
  lock.acquire();
  out.send(std::string("acquired"));
  lock.release();
}

void over_release(mp::BoundedSemaphore s, mp::Connection out) {
  s.release();
  try {
    s.release();
    out.send(std::string("no error"));
  } catch (const mp::ValueError&) {
    out.send(std::string("ValueError"));
  }
}

void wait_notified(mp::Condition cond, mp::Connection out) {
  std::lock_guard held(cond);
  out.send(std::string("waiting"));  // the parent can take the lock once this waits
  out.send(cond.wait(patience));
}

void wait_then_set(mp::Event go, mp::Event done) {
  if (go.wait(patience)) done.set();
}

void meet(mp::Barrier barrier, mp::Connection out) { out.send(barrier.wait(patience)); }

void barrier_action() {}

void add_under_lock(mp::Value<long> v, int times) {
  for (int i = 0; i < times; ++i) {
    std::lock_guard held(v.get_lock());
    v.value() += 1;
  }
}

void fill_squares(mp::Array<int> a) {
  std::lock_guard held(a.get_lock());
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int>(i * i);
}

void report_raw(mp::Value<double> v, mp::Connection out) {
  bool has_lock = true;
  try {
    v.get_lock();
  } catch (const mp::ValueError&) {
    has_lock = false;
  }
  out.send(std::make_tuple(v.value(), has_lock));
  v.value() = 2.5;
}

// A child that hands its queue on to a grandchild started by the same method.
void relay(mp::Queue<int> q, int method) {
  mp::Process grandchild(with(static_cast<mp::StartMethod>(method)), +[](mp::Queue<int> q2) { q2.put(7); }, q);
  grandchild.start();
  grandchild.join();
  q.put(*grandchild.exitcode());
}

} // namespace

TEST_CASE("handle transfer: a Queue crosses both ways; an item put in the child is got in the parent",
          "[handle_transfer][queue]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Queue<int> in;
    mp::Queue<std::string> out;
    in.put(21);
    mp::Process p(with(m), double_it, in, out);
    p.start();
    CHECK(out.get(patience) == "42");
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
    CHECK(in.qsize() == 0);
    CHECK(out.empty());
  }
}

TEST_CASE("handle transfer: a Queue passed twice crosses and keeps working after the child drops one copy", "[handle_transfer][queue]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Queue<int> q;
    run_child(m, put_through_both, q, q);
    CHECK(q.get(patience) == 1);
    CHECK(q.get(patience) == 2);
    CHECK(q.qsize() == 0);
  }
}

TEST_CASE("handle transfer: a SimpleQueue crosses and carries items both ways", "[handle_transfer][queue]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::SimpleQueue<int> in, out;
    mp::Process p(with(m), echo_simple, in, out);
    p.start();
    in.put(9);
    CHECK(out.get() == 10);
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
  }
}

TEST_CASE("handle transfer: a JoinableQueue's task_done in the child ends the parent's join",
          "[handle_transfer][queue]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::JoinableQueue<int> tasks;
    for (int i = 0; i < 3; ++i) tasks.put(i);
    CHECK_FALSE(tasks.join(0s));
    mp::Process p(with(m), finish_tasks, tasks, 3);
    p.start();
    CHECK(tasks.join(patience));
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
  }
}

TEST_CASE("handle transfer: a Queue crosses again from a spawned or forkserver child into its own child",
          "[handle_transfer][queue]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Queue<int> q;
    run_child(m, relay, q, static_cast<int>(m));
    CHECK(q.get(patience) == 7);  // from the grandchild
    CHECK(q.get(patience) == 0);  // its exit code, from the child
  }
}

TEMPLATE_TEST_CASE("handle transfer: a lock held by the parent blocks the child until the parent releases it",
                   "[handle_transfer][lock]", mp::Lock, mp::RLock, mp::Semaphore, mp::BoundedSemaphore) {
  for (auto m : every_method) {
    INFO(method_name(m));
    TestType lock;
    lock.acquire();
    auto [mine, theirs] = mp::Pipe();
    mp::Process p(with(m), contend<TestType>, lock, theirs);
    p.start();
    CHECK_FALSE(received<bool>(mine));  // held by the parent: the child could not take it
    lock.release();
    CHECK(received<std::string>(mine) == "acquired");
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
    CHECK(lock.try_acquire());  // and the child released the same lock
    lock.release();
  }
}

TEST_CASE("handle transfer: a BoundedSemaphore keeps its bound in the child", "[handle_transfer][lock]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::BoundedSemaphore s(1);
    s.acquire();
    auto [mine, theirs] = mp::Pipe();
    run_child(m, over_release, s, theirs);
    CHECK(received<std::string>(mine) == "ValueError");
    CHECK(s.get_value() == 1);
  }
}

TEST_CASE("handle transfer: a Condition's notify in the parent wakes the child's wait", "[handle_transfer][condition]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Condition cond;
    auto [mine, theirs] = mp::Pipe();
    mp::Process p(with(m), wait_notified, cond, theirs);
    p.start();
    CHECK(received<std::string>(mine) == "waiting");
    {
      std::lock_guard held(cond);  // free only once the child waits: the same lock
      cond.notify();
    }
    CHECK(received<bool>(mine));
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
  }
}

TEST_CASE("handle transfer: an Event set in the child wakes the parent's wait", "[handle_transfer][event]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Event go, done;
    mp::Process p(with(m), wait_then_set, go, done);
    p.start();
    go.set();
    CHECK(done.wait(patience));
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
  }
}

TEST_CASE("handle transfer: a Barrier with a function action meets across parent and child",
          "[handle_transfer][barrier]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Barrier barrier(2, barrier_action, std::chrono::duration<double>(30));
    auto [mine, theirs] = mp::Pipe();
    mp::Process p(with(m), meet, barrier, theirs);
    p.start();
    int own = barrier.wait(patience);
    int child = received<int>(mine);
    CHECK(own + child == 1);  // indices 0 and 1, one each
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
    CHECK(barrier.n_waiting() == 0);
    CHECK_FALSE(barrier.broken());
  }
}

TEST_CASE("handle transfer: a Barrier whose action is not a function pointer is a ValueError from start()",
          "[handle_transfer][barrier]") {
  for (auto m : {mp::StartMethod::spawn, mp::StartMethod::forkserver}) {
    INFO(method_name(m));
    int calls = 0;
    mp::Barrier barrier(2, [&calls] { ++calls; });
    auto [mine, theirs] = mp::Pipe();
    mp::Process p(with(m), meet, barrier, theirs);
    CHECK_THROWS_WITH(p.start(), Catch::Contains("Barrier") && Catch::Contains("function pointer"));
    CHECK_FALSE(p.is_alive());
  }
}

TEST_CASE("handle transfer: Value increments under its lock by parent and child both count",
          "[handle_transfer][sharedctypes]") {
  constexpr int times = 2000;
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Value<long> v(0);
    mp::Process p(with(m), add_under_lock, v, times);
    p.start();
    add_under_lock(v, times);
    join_or_kill(p);
    CHECK(p.exitcode() == 0);
    CHECK(v.value() == 2 * times);
  }
}

TEST_CASE("handle transfer: an Array written by the child is read by the parent; a RawValue crosses without a lock",
          "[handle_transfer][sharedctypes]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    mp::Array<int> a(50);
    run_child(m, fill_squares, a);
    CHECK(a[49] == 49 * 49);
    CHECK(a[7] == 49);

    auto raw = mp::RawValue<double>(1.25);
    auto [mine, theirs] = mp::Pipe();
    run_child(m, report_raw, raw, theirs);
    CHECK(received<std::tuple<double, bool>>(mine) == std::make_tuple(1.25, false));
    CHECK(raw.value() == 2.5);
  }
}

TEST_CASE("handle transfer: passing every handle type leaks no descriptor in the parent", "[handle_transfer][fd]") {
  for (auto m : every_method) {
    INFO(method_name(m));
    run_child(m, +[](int) {}, 0);  // the fork server's own connection is made at first use
    auto before = open_fds();
    {
      mp::Queue<int> q;
      mp::JoinableQueue<int> jq;
      mp::SimpleQueue<int> sq;
      mp::Lock lock;
      mp::RLock rlock;
      mp::Semaphore sem;
      mp::BoundedSemaphore bsem;
      mp::Condition cond;
      mp::Event event;
      mp::Barrier barrier(1);
      mp::Value<int> value;
      mp::Array<signed char> array(3);
      run_child(m, +[](mp::Queue<int> q, mp::JoinableQueue<int> jq, mp::SimpleQueue<int> sq, mp::Lock, mp::RLock,
                       mp::Semaphore, mp::BoundedSemaphore, mp::Condition, mp::Event, mp::Barrier b,
                       mp::Value<int> v, mp::Array<signed char> a) {
        q.put(1);
        jq.put(2);
        sq.put(3);
        b.wait();
        v.value() = 4;
        a[2] = 'x';
      }, q, jq, sq, lock, rlock, sem, bsem, cond, event, barrier, value, array);
      CHECK(q.get(patience) == 1);
      CHECK(jq.get(patience) == 2);
      CHECK(sq.get() == 3);
      CHECK(value.value() == 4);
      CHECK(array[2] == 'x');
    }
    CHECK(open_fds() == before);
  }
}
