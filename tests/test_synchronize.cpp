// Tests for <multiproc/synchronize.hpp>: Lock, RLock, Semaphore, BoundedSemaphore, Condition,
// Event and Barrier across real processes, their timeouts, their misuse errors, and robustness
// when a holder is killed.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "ipc_test_support.hpp"
#include "signal_storm.hpp"
#include "multiproc/multiproc.hpp"
#include <catch2/catch.hpp>

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::join_or_kill;
using multiproc_test::patience;
using multiproc_test::Team;

namespace {

std::string unique_temp_path(const char* tag) {
  static int counter = 0;
  return (std::filesystem::temp_directory_path() /
          ("mp-sync-" + std::string(tag) + "-" + std::to_string(::getpid()) + "-" +
           std::to_string(++counter)))
      .string();
}

// Appends in three separate writes, so that writers not serialized by the lock would interleave.
void append_in_pieces(const std::string& path, int i) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (fd < 0) throw mp::OSError("open failed", errno);
  std::string pieces[] = {"Lock acquired ", "via with ", std::to_string(i) + "\n"};
  for (auto& piece : pieces) {
    if (::write(fd, piece.data(), piece.size()) != static_cast<ssize_t>(piece.size())) {
      ::close(fd);
      throw mp::OSError("write failed", errno);
    }
    std::this_thread::yield();
  }
  ::close(fd);
}

// Seed 000's worker_no_with: acquire, write, release.
void write_line_under_lock(mp::Lock lock, std::string path, int i) {
  lock.acquire();
  try {
    append_in_pieces(path, i);
  } catch (...) {
    lock.release();
    throw;
  }
  lock.release();
}

void count_under_lock(mp::Lock lock, mp::Value<long> counter, int times) {
  for (int i = 0; i < times; ++i) {
    std::lock_guard guard(lock);
    counter.value() += 1;
  }
}

// Takes the lock, says so, then waits (bounded) for permission to release it.
template <class L>
void hold_until_told(L lock, mp::Event holding, mp::Event may_release) {
  lock.acquire();
  holding.set();
  if (!may_release.wait(patience)) throw mp::SystemExit{3};
  lock.release();
}

// Takes the lock, says so, and never releases it: the test kills this process.
template <class L>
void hold_until_killed(L lock, mp::Event holding, mp::Event never) {
  lock.acquire();
  holding.set();
  never.wait(patience);
  throw mp::SystemExit{3};
}

// Takes and gives back the lock with the untimed calls (the test bounds it by joining).
template <class L>
void acquire_and_release(L lock) {
  lock.acquire();
  lock.release();
}

// Exits 0 when releasing `lock` (held by the parent) is refused with ValueError.
void release_someone_elses(mp::RLock lock) {
  try {
    lock.release();
  } catch (const mp::ValueError&) {
    return;
  }
  throw mp::SystemExit{2};
}

void release_once(mp::Semaphore sem) { sem.release(); }

// Counts how many processes are inside the semaphore at once; records the maximum seen.
void enter_semaphore(mp::Semaphore sem, mp::Value<int> inside, mp::Value<int> max_inside, mp::Barrier start) {
  start.wait(patience);
  for (int i = 0; i < 50; ++i) {
    std::lock_guard guard(sem);
    {
      std::lock_guard count(inside.get_lock());
      int now = ++inside.value();
      if (now > max_inside.value()) max_inside.value() = now;
    }
    std::this_thread::yield();
    std::lock_guard count(inside.get_lock());
    --inside.value();
  }
}

// Waits for state 1 under the condition, then answers with state 2.
void answer_on_condition(mp::Condition cond, mp::Value<int> state) {
  std::unique_lock lock(cond);
  if (!cond.wait_for([&] { return state.value() == 1; }, patience)) throw mp::SystemExit{3};
  state.value() = 2;
  cond.notify_all();
}

void notify_after_taking_lock(mp::Condition cond, mp::Value<int> state) {
  std::lock_guard lock(cond);
  state.value() = 1;
  cond.notify();
}

// Says it is waiting (state 1) and waits for state 2, then answers with state 3.
void wait_then_answer(mp::Condition cond, mp::Value<int> state) {
  std::unique_lock lock(cond);
  state.value() = 1;
  if (!cond.wait_for([&] { return state.value() == 2; }, patience)) throw mp::SystemExit{3};
  state.value() = 3;
  cond.notify_all();
}

// Says it is waiting (state 1) and waits until the test kills it.
void wait_until_killed(mp::Condition cond, mp::Value<int> state) {
  std::unique_lock lock(cond);
  state.value() = 1;
  cond.wait(patience);
  throw mp::SystemExit{3};
}

// Takes the condition's lock once `state` has `value`: a child that wrote it under the lock
// before its wait() is then waiting (it gave the lock up inside wait()).
std::unique_lock<mp::Condition> lock_once_state_is(mp::Condition& cond, const mp::Value<int>& state, int value) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  for (;;) {
    std::unique_lock lock(cond);
    if (state.value() == value) return lock;
    lock.unlock();
    if (std::chrono::steady_clock::now() > deadline) FAIL("state never became " << value);
    std::this_thread::yield();
  }
}

// Stops p with SIGSTOP and returns once the kernel reports it stopped.
void stop_process(mp::Process& p) {
  pid_t pid = *p.pid();
  REQUIRE(::kill(pid, SIGSTOP) == 0);
  auto path = "/proc/" + std::to_string(pid) + "/stat";
  auto deadline = std::chrono::steady_clock::now() + patience;
  for (;;) {
    std::ifstream stat(path);
    std::string line;
    std::getline(stat, line);
    auto state_at = line.rfind(')') + 2;  // "pid (comm) S ..."
    if (state_at < line.size() && line[state_at] == 'T') return;
    if (std::chrono::steady_clock::now() > deadline) FAIL("process " << pid << " never stopped");
    std::this_thread::yield();
  }
}

void wait_for_event(mp::Event event) {
  if (!event.wait(patience)) throw mp::SystemExit{3};
}

// Waits at the barrier and stores the index it got in slot `me`.
void wait_at_barrier(mp::Barrier barrier, mp::Array<int> indices, int me) {
  indices[static_cast<std::size_t>(me)] = barrier.wait(patience);
}

// Exits 0 when the barrier wait ends in BrokenBarrierError.
void expect_broken_barrier(mp::Barrier barrier) {
  try {
    barrier.wait(patience);
  } catch (const mp::BrokenBarrierError&) {
    return;
  }
  throw mp::SystemExit{2};
}

// Exits 0 when a barrier wait without a timeout ends in BrokenBarrierError (the test bounds it
// by joining).
void expect_broken_barrier_untimed(mp::Barrier barrier) {
  try {
    barrier.wait();
  } catch (const mp::BrokenBarrierError&) {
    return;
  }
  throw mp::SystemExit{2};
}

// Waits at the barrier; the test kills it there (or stops it and kills it once released).
void wait_at_barrier_until_killed(mp::Barrier barrier) {
  barrier.wait(patience);
  mp::Event().wait(patience);
  throw mp::SystemExit{3};
}

// Spins (bounded) until the barrier has n waiters: the waiters are other processes.
bool await_waiters(const mp::Barrier& barrier, int n) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (barrier.n_waiting() != n)
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    else
      std::this_thread::yield();
  return true;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("lock: ten writers append to one file under a Lock without interleaving (seed 000)",
          "[lock][ipc]") {
  auto path = unique_temp_path("writers");
  mp::Lock lock;
  {
    Team writers;
    for (int i = 0; i < 10; ++i) writers.start(write_line_under_lock, lock, path, i);
    for (int code : writers.join_all()) CHECK(code == 0);
  }
  auto lines = read_lines(path);
  std::filesystem::remove(path);
  REQUIRE(lines.size() == 10);
  std::set<std::string> expected, seen(lines.begin(), lines.end());
  for (int i = 0; i < 10; ++i) expected.insert("Lock acquired via with " + std::to_string(i));
  CHECK(seen == expected);
}

TEST_CASE("lock: increments under a Lock from 1, 2, 4 and 8 processes add up exactly", "[lock][ipc]") {
  int processes = GENERATE(1, 2, 4, 8);
  constexpr int times = 2000;
  mp::Lock lock;
  auto counter = mp::RawValue<long>(0);
  Team team;
  for (int i = 0; i < processes; ++i) team.start(count_under_lock, lock, counter, times);
  for (int code : team.join_all()) CHECK(code == 0);
  CHECK(counter.value() == long{processes} * times);
}

TEST_CASE("lock: acquire with a timeout returns false while another process holds it", "[lock][ipc]") {
  mp::Lock lock;
  mp::Event holding, may_release;
  Team team;
  team.start(hold_until_told<mp::Lock>, lock, holding, may_release);
  REQUIRE(holding.wait(patience));
  CHECK_FALSE(lock.acquire(20ms));
  CHECK_FALSE(lock.try_acquire());
  may_release.set();
  CHECK(lock.acquire(patience));
  lock.release();
  CHECK(team.join_all() == std::vector<int>{0});
}

TEST_CASE("lock: release of an unheld Lock throws ValueError", "[lock]") {
  mp::Lock lock;
  CHECK_THROWS_AS(lock.release(), mp::ValueError);
  lock.acquire();
  lock.release();
  CHECK_THROWS_AS(lock.release(), mp::ValueError);
}

TEST_CASE("lock: a holder killed while holding it does not deadlock the next acquirer",
          "[lock][robust][ipc]") {
  auto check_recovery = [](auto lock, auto hold) {
    mp::Event holding, never;
    mp::Process holder(hold, lock, holding, never);
    holder.start();
    REQUIRE(holding.wait(patience));
    CHECK_FALSE(lock.try_acquire());
    holder.kill();
    join_or_kill(holder);
    CHECK(holder.exitcode() == -SIGKILL);
    mp::Process next(acquire_and_release<decltype(lock)>, lock);
    next.start();
    join_or_kill(next);
    CHECK(next.exitcode() == 0);
    REQUIRE(lock.acquire(patience));
    lock.release();
    CHECK_THROWS_AS(lock.release(), mp::ValueError);
  };
  SECTION("Lock") { check_recovery(mp::Lock(), hold_until_killed<mp::Lock>); }
  SECTION("RLock") { check_recovery(mp::RLock(), hold_until_killed<mp::RLock>); }
}

TEST_CASE("rlock: its owner acquires it again and each acquire needs a release", "[rlock]") {
  mp::RLock lock;
  CHECK_FALSE(lock.is_owned());
  lock.acquire();
  CHECK(lock.acquire(0ms));
  CHECK(lock.try_acquire());
  CHECK(lock.is_owned());
  lock.release();
  lock.release();
  CHECK(lock.is_owned());
  lock.release();
  CHECK_FALSE(lock.is_owned());
  CHECK_THROWS_AS(lock.release(), mp::ValueError);
}

TEST_CASE("rlock: release by a process that does not own it throws ValueError", "[rlock][ipc]") {
  mp::RLock lock;
  lock.acquire();
  Team team;
  team.start(release_someone_elses, lock);
  CHECK(team.join_all() == std::vector<int>{0});
  CHECK(lock.is_owned());
  lock.release();
}

TEST_CASE("rlock: another process waits for it until the owner releases every level", "[rlock][ipc]") {
  mp::RLock lock;
  mp::Event holding, may_release;
  Team team;
  team.start(hold_until_told<mp::RLock>, lock, holding, may_release);
  REQUIRE(holding.wait(patience));
  CHECK_FALSE(lock.acquire(10ms));
  may_release.set();
  CHECK(lock.acquire(patience));
  lock.release();
  CHECK(team.join_all() == std::vector<int>{0});
}

TEST_CASE("semaphore: acquire waits for a release from another process", "[semaphore][ipc]") {
  mp::Semaphore sem(0);
  CHECK(sem.get_value() == 0);
  CHECK_FALSE(sem.try_acquire());
  CHECK_FALSE(sem.acquire(10ms));
  Team team;
  team.start(release_once, sem);
  CHECK(sem.acquire(patience));
  CHECK(team.join_all() == std::vector<int>{0});
  CHECK(sem.get_value() == 0);
  sem.release();
  sem.release();
  CHECK(sem.get_value() == 2);
}

TEST_CASE("semaphore: never admits more than its value from 1, 2, 4 and 8 processes", "[semaphore][ipc]") {
  int processes = GENERATE(1, 2, 4, 8);
  mp::Semaphore sem(2);
  mp::Value<int> inside(0), max_inside(0);
  mp::Barrier start(processes);
  Team team;
  for (int i = 0; i < processes; ++i) team.start(enter_semaphore, sem, inside, max_inside, start);
  for (int code : team.join_all()) CHECK(code == 0);
  CHECK(max_inside.value() <= 2);
  CHECK(max_inside.value() >= 1);
  CHECK(sem.get_value() == 2);
}

TEST_CASE("bounded semaphore: release above the initial value throws ValueError", "[semaphore]") {
  mp::BoundedSemaphore sem(2);
  CHECK_THROWS_AS(sem.release(), mp::ValueError);
  sem.acquire();
  sem.release();
  CHECK_THROWS_AS(sem.release(), mp::ValueError);
  CHECK(sem.get_value() == 2);
  mp::Semaphore unbounded(1);
  unbounded.release();
  CHECK(unbounded.get_value() == 2);
}

TEST_CASE("condition: notify wakes a waiter in another process, which answers", "[condition][ipc]") {
  mp::Condition cond;
  auto state = mp::RawValue<int>(0);
  Team team;
  team.start(answer_on_condition, cond, state);
  {
    std::unique_lock lock(cond);
    state.value() = 1;
    cond.notify();
    CHECK(cond.wait_for([&] { return state.value() == 2; }, patience));
  }
  CHECK(team.join_all() == std::vector<int>{0});
}

// Issue 11.1 (repro_condition_lost_wakeup): the parent's own wait, started right after its
// notify, took the signal meant for the child, which slept on. The child is held stopped so that
// the parent's wait surely comes first.
TEST_CASE("condition: a notify wakes the waiter that was waiting and never a wait that starts after it",
          "[condition][ipc]") {
  mp::Condition cond;
  auto state = mp::RawValue<int>(0);
  Team team;
  auto& child = team.start(wait_then_answer, cond, state);
  {
    auto lock = lock_once_state_is(cond, state, 1);
    stop_process(child);
    state.value() = 2;
    cond.notify();
    CHECK_FALSE(cond.wait(20ms));
    REQUIRE(::kill(*child.pid(), SIGCONT) == 0);
    CHECK(cond.wait_for([&] { return state.value() == 3; }, patience));
  }
  CHECK(team.join_all() == std::vector<int>{0});
}

// Issue 11.2 (repro_condition_stale_wakeup): the dead waiter stayed counted, and the notify meant
// for it woke the next, unrelated wait at once.
TEST_CASE("condition: a waiter killed inside wait() leaves no wake-up for a later waiter",
          "[condition][robust][ipc]") {
  mp::Condition cond;
  auto state = mp::RawValue<int>(0);
  Team dead;
  auto& victim = dead.start(wait_until_killed, cond, state);
  {
    auto lock = lock_once_state_is(cond, state, 1);
    victim.kill();
    join_or_kill(victim);
    cond.notify(1);
    CHECK_FALSE(cond.wait(50ms));
    state.value() = 0;
  }
  Team team;
  team.start(wait_then_answer, cond, state);
  {
    auto lock = lock_once_state_is(cond, state, 1);
    state.value() = 2;
    cond.notify(1);
    CHECK(cond.wait_for([&] { return state.value() == 3; }, patience));
  }
  CHECK(team.join_all() == std::vector<int>{0});
}

TEST_CASE("condition: wait releases every level of its RLock and restores them", "[condition][ipc]") {
  mp::RLock rlock;
  mp::Condition cond(rlock);
  auto state = mp::RawValue<int>(0);
  cond.acquire();
  cond.acquire();
  Team team;
  team.start(notify_after_taking_lock, cond, state);
  CHECK(cond.wait_for([&] { return state.value() == 1; }, patience));
  CHECK(rlock.is_owned());
  cond.release();
  CHECK(rlock.is_owned());
  cond.release();
  CHECK_FALSE(rlock.is_owned());
  CHECK(team.join_all() == std::vector<int>{0});
}

TEST_CASE("condition: wait times out without a notify, and misuse throws ValueError", "[condition]") {
  mp::Condition cond;
  CHECK_THROWS_AS(cond.wait(1ms), mp::ValueError);
  CHECK_THROWS_AS(cond.notify(), mp::ValueError);
  CHECK_THROWS_AS(cond.notify_all(), mp::ValueError);
  std::unique_lock lock(cond);
  CHECK_FALSE(cond.wait(5ms));
  CHECK_FALSE(cond.wait_for([] { return false; }, 5ms));
  cond.notify_all();  // nobody waits: nothing happens
}

TEST_CASE("event: a waiter in another process wakes when the event is set", "[event][ipc]") {
  mp::Event event;
  CHECK_FALSE(event.is_set());
  CHECK_FALSE(event.wait(5ms));
  Team team;
  for (int i = 0; i < 3; ++i) team.start(wait_for_event, event);
  event.set();
  CHECK(team.join_all() == std::vector<int>{0, 0, 0});
  CHECK(event.is_set());
  CHECK(event.wait(0ms));
  event.clear();
  CHECK_FALSE(event.is_set());
}

TEST_CASE("barrier: 1, 2, 4 and 8 processes meet, get distinct indices, and the action runs once",
          "[barrier][ipc]") {
  int processes = GENERATE(1, 2, 4, 8);
  auto actions = mp::RawValue<int>(0);
  auto* actions_ptr = &actions;
  mp::Barrier barrier(processes, [actions_ptr] { ++actions_ptr->value(); });
  mp::Array<int> indices(static_cast<std::size_t>(processes));
  Team team;
  for (int i = 0; i < processes; ++i) team.start(wait_at_barrier, barrier, indices, i);
  for (int code : team.join_all()) CHECK(code == 0);
  auto got = indices.to_vector();
  std::set<int> distinct(got.begin(), got.end());
  CHECK(distinct.size() == static_cast<std::size_t>(processes));
  CHECK(*distinct.begin() == 0);
  CHECK(*distinct.rbegin() == processes - 1);
  CHECK(actions.value() == 1);
  CHECK(barrier.n_waiting() == 0);
  CHECK_FALSE(barrier.broken());
}

TEST_CASE("barrier: abort raises BrokenBarrierError in every waiter until reset", "[barrier][ipc]") {
  mp::Barrier barrier(3);
  Team team;
  team.start(expect_broken_barrier, barrier);
  team.start(expect_broken_barrier, barrier);
  REQUIRE(await_waiters(barrier, 2));
  barrier.abort();
  CHECK(team.join_all() == std::vector<int>{0, 0});
  CHECK(barrier.broken());
  CHECK_THROWS_AS(barrier.wait(1s), mp::BrokenBarrierError);
  barrier.reset();
  CHECK_FALSE(barrier.broken());
  mp::Array<int> indices(3);
  Team again;
  again.start(wait_at_barrier, barrier, indices, 0);
  again.start(wait_at_barrier, barrier, indices, 1);
  indices[2] = barrier.wait(patience);
  CHECK(again.join_all() == std::vector<int>{0, 0});
  auto got = indices.to_vector();
  CHECK(std::set<int>(got.begin(), got.end()) == std::set<int>{0, 1, 2});
}

TEST_CASE("barrier: a wait that times out breaks the barrier for the others too", "[barrier][ipc]") {
  mp::Barrier barrier(3, {}, 20ms);
  Team team;
  team.start(expect_broken_barrier, barrier);
  CHECK_THROWS_AS(barrier.wait(), mp::BrokenBarrierError);
  CHECK(barrier.broken());
  CHECK(team.join_all() == std::vector<int>{0});
}

// Issue 11.6 (repro_barrier_dead_party): a party killed inside wait() stayed counted, so the
// barrier never released or drained again, and even wait(timeout) after reset() blocked for good.
TEST_CASE("barrier: a party killed inside wait() breaks the barrier for the party waiting with it",
          "[barrier][robust][ipc]") {
  bool victim_first = GENERATE(true, false);
  mp::Barrier barrier(3);
  Team team;
  int started = 0;
  for (bool victim : {victim_first, !victim_first}) {
    if (victim)
      team.start(wait_at_barrier_until_killed, barrier);
    else
      team.start(expect_broken_barrier_untimed, barrier);
    REQUIRE(await_waiters(barrier, ++started));
  }
  auto& victim = team[victim_first ? 0 : 1];
  auto& survivor = team[victim_first ? 1 : 0];
  victim.kill();
  join_or_kill(victim);
  join_or_kill(survivor);
  CHECK(survivor.exitcode() == 0);
  CHECK(barrier.broken());
  CHECK_THROWS_AS(barrier.wait(patience), mp::BrokenBarrierError);
  barrier.reset();
  mp::Array<int> indices(3);
  Team again;
  again.start(wait_at_barrier, barrier, indices, 0);
  again.start(wait_at_barrier, barrier, indices, 1);
  indices[2] = barrier.wait(patience);
  CHECK(again.join_all() == std::vector<int>{0, 0});
  auto got = indices.to_vector();
  CHECK(std::set<int>(got.begin(), got.end()) == std::set<int>{0, 1, 2});
}

TEST_CASE("barrier: after a party died waiting alone, the next arrival finds it broken, "
          "wait(timeout) keeps its timeout and reset() makes it usable",
          "[barrier][robust][ipc]") {
  mp::Barrier barrier(2);
  Team dead;
  auto& victim = dead.start(wait_at_barrier_until_killed, barrier);
  REQUIRE(await_waiters(barrier, 1));
  victim.kill();
  join_or_kill(victim);
  CHECK_THROWS_AS(barrier.wait(patience), mp::BrokenBarrierError);
  barrier.reset();
  CHECK_FALSE(barrier.broken());
  CHECK(barrier.n_waiting() == 0);
  CHECK_THROWS_AS(barrier.wait(20ms), mp::BrokenBarrierError);  // nobody else comes: it times out
  barrier.reset();
  mp::Array<int> indices(2);
  Team team;
  team.start(wait_at_barrier, barrier, indices, 0);
  indices[1] = barrier.wait(patience);
  CHECK(team.join_all() == std::vector<int>{0});
  CHECK(std::set<int>{indices[0], indices[1]} == std::set<int>{0, 1});
}

TEST_CASE("barrier: a party killed while it runs the action breaks the barrier for the others",
          "[barrier][robust][ipc]") {
  mp::Event in_action, never;
  mp::Barrier barrier(2, [in_action, never]() mutable {
    in_action.set();
    never.wait(patience);
  });
  Team team;
  team.start(expect_broken_barrier_untimed, barrier);
  REQUIRE(await_waiters(barrier, 1));
  team.start(wait_at_barrier_until_killed, barrier);
  REQUIRE(in_action.wait(patience));
  team[1].kill();
  CHECK(team.join_all() == std::vector<int>{0, -SIGKILL});
  CHECK(barrier.broken());
}

TEST_CASE("barrier: a party killed after its release but before it left wait() does not hold up the "
          "next round",
          "[barrier][robust][ipc]") {
  mp::Barrier barrier(2);
  Team dead;
  auto& victim = dead.start(wait_at_barrier_until_killed, barrier);
  REQUIRE(await_waiters(barrier, 1));
  stop_process(victim);  // released below, it cannot leave wait() before it dies
  CHECK(barrier.wait(patience) == 1);
  victim.kill();
  join_or_kill(victim);
  mp::Array<int> indices(2);
  Team team;
  team.start(wait_at_barrier, barrier, indices, 0);
  indices[1] = barrier.wait(patience);
  CHECK(team.join_all() == std::vector<int>{0});
  CHECK(std::set<int>{indices[0], indices[1]} == std::set<int>{0, 1});
  CHECK_FALSE(barrier.broken());
}

TEST_CASE("barrier: an action that throws breaks the barrier and reaches the last waiter", "[barrier]") {
  mp::Barrier barrier(1, [] { throw std::runtime_error("action failed"); });
  CHECK_THROWS_WITH(barrier.wait(), "action failed");
  CHECK(barrier.broken());
  CHECK(barrier.parties() == 1);
}

// Issue 11.7 (repro_eintr_timeout), for the waits of this header: each computes what is left of
// its deadline after an EINTR rather than starting its timeout again.
TEST_CASE("synchronize: every timed wait ends at its deadline under a storm of signals (EINTR)",
          "[lock][rlock][semaphore][condition][event][barrier][eintr][ipc]") {
  mp::Lock lock;
  mp::RLock rlock;
  mp::Event holding_lock, holding_rlock, may_release;
  Team holders;
  holders.start(hold_until_told<mp::Lock>, lock, holding_lock, may_release);
  holders.start(hold_until_told<mp::RLock>, rlock, holding_rlock, may_release);
  REQUIRE(holding_lock.wait(patience));
  REQUIRE(holding_rlock.wait(patience));
  mp::Semaphore empty(0);
  mp::Event unset;
  mp::Condition cond;
  mp::Barrier barrier(2);
  constexpr auto timeout = 100ms;
  std::pair<const char*, std::function<bool()>> waits[] = {
      {"Lock.acquire", [&] { return lock.acquire(timeout); }},
      {"RLock.acquire", [&] { return rlock.acquire(timeout); }},
      {"Semaphore.acquire", [&] { return empty.acquire(timeout); }},
      {"Event.wait", [&] { return unset.wait(timeout); }},
      {"Condition.wait", [&] { std::lock_guard g(cond); return cond.wait(timeout); }},
      {"Condition.wait_for", [&] { std::lock_guard g(cond); return cond.wait_for([] { return false; }, timeout); }},
      {"Barrier.wait", [&] {
         barrier.reset();  // the try before broke it
         try {
           barrier.wait(timeout);
         } catch (const mp::BrokenBarrierError&) {
           return false;
         }
         return true;
       }}};
  for (auto& [name, timed_wait] : waits) {
    INFO(name);
    bool acquired = true;
    auto took = multiproc_test::time_under_storm(timeout, [&] { acquired = timed_wait(); });
    REQUIRE(took);  // the storm kept this thread interrupted throughout one of the tries
    CHECK_FALSE(acquired);
    CHECK(*took >= timeout);
    CHECK(*took < multiproc_test::SignalStorm::longest / 2);  // it ended at its deadline, not once the storm did
  }
  may_release.set();
  CHECK(holders.join_all() == std::vector<int>{0, 0});
}

TEST_CASE("synchronize: the locks work with std::lock_guard, std::scoped_lock and std::unique_lock",
          "[lock][rlock][condition]") {
  mp::Lock lock;
  mp::RLock rlock;
  mp::Semaphore sem(1);
  {
    std::lock_guard guard(lock);
    CHECK_FALSE(lock.try_acquire());
  }
  {
    std::scoped_lock both(lock, rlock, sem);
    CHECK(rlock.is_owned());
    CHECK(sem.get_value() == 0);
  }
  CHECK_FALSE(rlock.is_owned());
  CHECK(sem.get_value() == 1);
  mp::Condition cond(rlock);
  std::unique_lock ulock(cond);
  CHECK(rlock.is_owned());
  ulock.unlock();
  CHECK_FALSE(rlock.is_owned());
  CHECK(lock.try_acquire());
  lock.release();
}

TEST_CASE("synchronize: primitives live in anonymous shared memory, never in /dev/shm", "[lock][shm]") {
  mp::Lock lock;
  mp::RLock rlock;
  mp::Semaphore sem;
  mp::Condition cond;
  mp::Event event;
  mp::Barrier barrier(2);
  CHECK(multiproc_test::dev_shm_mappings().empty());
}
