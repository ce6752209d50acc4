// Tests for <multiproc/queues.hpp>: Queue, JoinableQueue and SimpleQueue between real processes —
// the seed examples, no loss at exit, bounded and unbounded puts, timeouts that never swallow
// an item, misuse errors, and robustness when a consumer is killed.
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ipc_test_support.hpp"
#include "multiproc/multiproc.hpp"
#include <catch2/catch.hpp>

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::join_or_kill;
using multiproc_test::patience;
using multiproc_test::Team;

namespace {

using Tagged = std::pair<int, int>;  // (producer, sequence number)
constexpr int stop = -1;

// Seed 001's f(q): q.put([42, None, 'hello']).
void put_list(mp::Queue<mp::Object> q) { q.put(mp::Object::Array{42, mp::Object(), "hello"}); }

// Seed 000's produce(q), without its sleeps: 20 tagged items, then close.
void produce_twenty(mp::Queue<Tagged> q, int me) {
  for (int i = 0; i < 20; ++i) q.put({me, i});
  q.close();
  q.join_thread();
}

// Seed 000's consum(q) with get(True, 1), forwarding what it got until told to stop.
void consume_until_stop(mp::Queue<Tagged> q, mp::Queue<Tagged> results) {
  for (;;) {
    try {
      auto item = q.get(1s);
      if (item.first == stop) return;
      results.put(item);
    } catch (const mp::Empty&) {
    }
  }
}

void produce_twenty_joinable(mp::JoinableQueue<int> q, int me) {
  for (int i = 0; i < 20; ++i) q.put(me * 100 + i);
  q.close();
  q.join_thread();
}

// Seed 000's JoinableQueue consumer: get, count it, task_done (the seed terminates its
// consumers; these stop at a sentinel, so that the test's processes end cleanly).
void consume_and_mark_done(mp::JoinableQueue<int> q, mp::Value<int> processed, mp::Value<long> sum) {
  for (;;) {
    try {
      int item = q.get(1s);
      if (item == stop) return;
      {
        std::lock_guard guard(processed.get_lock());
        ++processed.value();
        sum.value() += item;
      }
      q.task_done();
    } catch (const mp::Empty&) {
    }
  }
}

// Puts n tagged items and returns without close(): the exit flush must deliver them.
void put_and_return(mp::Queue<Tagged> q, int me, int n) {
  for (int i = 0; i < n; ++i) q.put({me, i});
}

void put_ints_and_return(mp::Queue<int> q, int n) {
  for (int i = 0; i < n; ++i) q.put(i);
}

// Puts `megabytes` 1 MiB strings nobody reads yet, then tells the parent that put returned.
void put_megabytes(mp::Queue<std::string> q, int megabytes, mp::Event returned) {
  std::string block(1 << 20, 'x');
  for (int i = 0; i < megabytes; ++i) q.put(block);
  returned.set();
}

// Puts big blocks, gives up waiting for them at exit, and exits.
void put_megabytes_and_cancel(mp::Queue<std::string> q, int megabytes) {
  std::string block(1 << 20, 'x');
  for (int i = 0; i < megabytes; ++i) q.put(block);
  q.cancel_join_thread();
}

// Puts n items, yielding between them so that they land at arbitrary moments of the reader's
// short timed gets.
void put_with_jitter(mp::Queue<int> q, int n) {
  for (int i = 0; i < n; ++i) {
    q.put(i);
    for (int spin = 0; spin < i % 7; ++spin) std::this_thread::yield();
  }
}

// Blocks in get() (holding the consumer lock) until killed.
void block_in_get(mp::Queue<int> q, mp::Event started) {
  started.set();
  (void)q.get(patience);
  throw mp::SystemExit{3};
}

void put_one(mp::Queue<std::string> q, std::string s) { q.put(s); }

void sum_until_stop(mp::Queue<long> q, mp::Value<long long> sum, mp::Value<long> count) {
  for (;;) {
    long item = q.get(patience);
    if (item == stop) return;
    std::lock_guard guard(sum.get_lock());
    sum.value() += item;
    ++count.value();
  }
}

void put_range(mp::Queue<long> q, long from, long to) {
  for (long i = from; i < to; ++i) q.put(i);
}

void simple_put(mp::SimpleQueue<std::string> q, int n) {
  for (int i = 0; i < n; ++i) q.put("item " + std::to_string(i));
}

void task_done_in_child(mp::JoinableQueue<int> q, int times) {
  for (int i = 0; i < times; ++i) {
    (void)q.get(patience);
    q.task_done();
  }
}

// Checks that every producer's items arrived exactly once and, within `seq`, in put order.
void check_per_producer_order(const std::vector<Tagged>& seq) {
  std::map<int, int> next;
  for (auto [who, i] : seq) {
    CHECK(i >= next[who]);
    next[who] = i + 1;
  }
}

template <class T>
std::vector<T> drain(mp::Queue<T>& q, std::size_t n) {
  std::vector<T> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(q.get(patience));
  return out;
}

}  // namespace

TEST_CASE("queue: a child's q.put([42, None, 'hello']) arrives in the parent (seed 001)", "[queue][ipc]") {
  mp::Queue<mp::Object> q;
  mp::Process p(put_list, q);
  p.start();
  CHECK(q.get(patience).repr() == "[42, None, 'hello']");
  join_or_kill(p);
  CHECK(p.exitcode() == 0);
}

TEST_CASE("queue: 3 producers and 2 consumers share a queue of maxsize 5 (seed 000)", "[queue][ipc]") {
  mp::Queue<Tagged> q(5);
  std::vector<mp::Queue<Tagged>> results(2);  // one per consumer: each sees every producer in order
  Team consumers, producers;
  for (auto& r : results) consumers.start(consume_until_stop, q, r);
  for (int i = 0; i < 3; ++i) producers.start(produce_twenty, q, i);
  for (int code : producers.join_all()) CHECK(code == 0);
  for (int i = 0; i < 2; ++i) q.put({stop, 0});
  for (int code : consumers.join_all()) CHECK(code == 0);
  std::set<Tagged> distinct;
  for (auto& r : results) {
    std::vector<Tagged> got;
    while (auto item = r.try_get()) got.push_back(*item);
    check_per_producer_order(got);
    distinct.insert(got.begin(), got.end());
  }
  CHECK(distinct.size() == 60);
  CHECK(q.empty());
}

TEST_CASE("joinable queue: join returns once every item was task_done (seed 000)", "[queue][joinable][ipc]") {
  mp::JoinableQueue<int> q(5);
  mp::Value<int> processed(0);
  mp::Value<long> sum(0);
  Team consumers, producers;
  for (int i = 0; i < 2; ++i) consumers.start(consume_and_mark_done, q, processed, sum);
  for (int i = 0; i < 3; ++i) producers.start(produce_twenty_joinable, q, i);
  for (int code : producers.join_all()) CHECK(code == 0);
  REQUIRE(q.join(patience));
  CHECK(processed.value() == 60);
  CHECK(sum.value() == 3 * 190 + 100 * 20 + 200 * 20);
  for (int i = 0; i < 2; ++i) q.put(stop);
  for (int code : consumers.join_all()) CHECK(code == 0);
}

TEST_CASE("joinable queue: task_done from another process counts, too many throw ValueError",
          "[queue][joinable][ipc]") {
  mp::JoinableQueue<int> q;
  CHECK_THROWS_AS(q.task_done(), mp::ValueError);
  q.put(1);
  q.put(2);
  CHECK_FALSE(q.join(10ms));
  Team team;
  team.start(task_done_in_child, q, 2);
  CHECK(team.join_all() == std::vector<int>{0});
  CHECK(q.join(0ms));
  q.join();
  CHECK_THROWS_AS(q.task_done(), mp::ValueError);
}

TEST_CASE("queue: items a child put before returning are all delivered, in order", "[queue][exit][ipc]") {
  int producers = GENERATE(1, 2, 4, 8);
  constexpr int per_producer = 5000;
  mp::Queue<Tagged> q;
  Team team;
  for (int i = 0; i < producers; ++i) team.start(put_and_return, q, i, per_producer);
  auto got = drain(q, static_cast<std::size_t>(producers * per_producer));
  for (int code : team.join_all()) CHECK(code == 0);
  check_per_producer_order(got);
  std::map<int, int> per;
  for (auto [who, i] : got) ++per[who];
  for (int i = 0; i < producers; ++i) CHECK(per[i] == per_producer);
  CHECK(q.empty());
  CHECK(q.qsize() == 0);
}

TEST_CASE("queue: items the main process put before returning from main are delivered", "[queue][exit]") {
  std::string command = "timeout 60 " MULTIPROC_TEST_PROGRAMS_DIR "/queue_exit_helper";
  FILE* out = ::popen(command.c_str(), "r");
  REQUIRE(out != nullptr);
  std::string output;
  char buf[256];
  while (std::fgets(buf, sizeof buf, out)) output += buf;
  int status = ::pclose(out);
  CHECK(output == "consumer got 20000 in order\n");
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("queue: 1, 2, 4 and 8 producers and consumers pass every item exactly once", "[queue][ipc]") {
  int n = GENERATE(1, 2, 4, 8);
  constexpr long per_producer = 3000;
  mp::Queue<long> q(64);
  mp::Value<long long> sum(0);
  mp::Value<long> count(0);
  Team consumers, producers;
  for (int i = 0; i < n; ++i) consumers.start(sum_until_stop, q, sum, count);
  for (int i = 0; i < n; ++i) producers.start(put_range, q, i * per_producer, (i + 1) * per_producer);
  for (int code : producers.join_all()) CHECK(code == 0);
  for (int i = 0; i < n; ++i) q.put(stop);
  for (int code : consumers.join_all()) CHECK(code == 0);
  long total = n * per_producer;
  CHECK(count.value() == total);
  CHECK(sum.value() == static_cast<long long>(total) * (total - 1) / 2);
  CHECK(q.empty());
}

TEST_CASE("queue: an unbounded put of many megabytes returns with no reader", "[queue][ipc]") {
  constexpr int megabytes = 32;
  mp::Queue<std::string> q;
  mp::Event returned;
  Team team;
  team.start(put_megabytes, q, megabytes, returned);
  REQUIRE(returned.wait(patience));
  CHECK(q.qsize() == megabytes);
  for (int i = 0; i < megabytes; ++i) CHECK(q.get(patience).size() == std::size_t{1} << 20);
  CHECK(team.join_all() == std::vector<int>{0});
  CHECK(q.empty());
}

TEST_CASE("queue: cancel_join_thread lets a process exit without flushing", "[queue][exit][ipc]") {
  mp::Queue<std::string> q;
  Team team;
  team.start(put_megabytes_and_cancel, q, 16);
  CHECK(team.join_all() == std::vector<int>{0});
}

TEST_CASE("queue: timeouts raise Empty and Full, nowait forms do not wait", "[queue]") {
  mp::Queue<int> q(2);
  CHECK_THROWS_AS(q.get(10ms), mp::Empty);
  CHECK_THROWS_AS(q.get_nowait(), mp::Empty);
  CHECK_FALSE(q.try_get());
  q.put(1);
  q.put_nowait(2);
  CHECK(q.full());
  CHECK(q.qsize() == 2);
  CHECK_THROWS_AS(q.put(3, 10ms), mp::Full);
  CHECK_THROWS_AS(q.put_nowait(3), mp::Full);
  CHECK(q.get(patience) == 1);
  CHECK_FALSE(q.full());
  CHECK(q.get(patience) == 2);
  CHECK(q.empty());
}

TEST_CASE("queue: a bounded put waits for a get in another process", "[queue][ipc]") {
  mp::Queue<int> q(1);
  q.put(0);
  Team team;
  team.start(put_ints_and_return, q, 50);
  for (int i = 0; i < 50; ++i) CHECK(q.get(patience) == (i == 0 ? 0 : i - 1));
  CHECK(q.get(patience) == 49);
  CHECK(team.join_all() == std::vector<int>{0});
}

TEST_CASE("queue: a get that times out never swallows an item arriving just after", "[queue][ipc]") {
  constexpr int n = 3000;
  mp::Queue<int> q;
  Team team;
  team.start(put_with_jitter, q, n);
  std::vector<int> got;
  int timeouts = 0;
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (got.size() < n && std::chrono::steady_clock::now() < deadline) {
    try {
      got.push_back(q.get(std::chrono::microseconds(got.size() % 50)));
    } catch (const mp::Empty&) {
      ++timeouts;
    }
  }
  REQUIRE(got.size() == n);
  for (int i = 0; i < n; ++i) CHECK(got[static_cast<std::size_t>(i)] == i);
  CHECK(team.join_all() == std::vector<int>{0});
  CHECK(q.empty());
  INFO("timed-out gets: " << timeouts);
}

TEST_CASE("queue: items larger than the read-ahead arrive whole and in order between small ones",
          "[queue][ipc]") {
  mp::Queue<std::string> q;
  std::vector<std::string> sent{"a", std::string(3 << 20, 'b'), "c", std::string(300 << 10, 'd'), "e"};
  for (auto& s : sent) {
    mp::Process child(put_one, q, s);
    child.start();
    CHECK(q.get(patience) == s);
    join_or_kill(child);
  }
}

TEST_CASE("queue: a consumer killed while waiting in get does not block the others", "[queue][robust][ipc]") {
  mp::Queue<int> q;
  mp::Event started;
  mp::Process blocked(block_in_get, q, started);
  blocked.start();
  REQUIRE(started.wait(patience));
  q.put(7);
  // The blocked consumer may or may not have taken the 7 before it dies; a second item must get
  // through either way.
  blocked.kill();
  join_or_kill(blocked);
  q.put(8);
  auto first = q.get(patience);
  CHECK((first == 7 || first == 8));
  if (first == 7) CHECK(q.get(patience) == 8);
}

TEST_CASE("queue: a forked child never re-sends items its parent had not written yet", "[queue][ipc]") {
  mp::Queue<std::string> q;
  // Megabytes nobody reads fill the socket, so the parent's feeder holds the markers back.
  constexpr int blocks = 8;
  for (int i = 0; i < blocks; ++i) q.put(std::string(1 << 20, 'x'));
  for (int i = 0; i < 5; ++i) q.put("parent " + std::to_string(i));
  Team team;
  team.start(put_one, q, std::string("child"));
  std::multiset<std::string> got;
  for (int i = 0; i < blocks + 6; ++i) got.insert(q.get(patience));
  CHECK(team.join_all() == std::vector<int>{0});
  CHECK(got.count("child") == 1);
  for (int i = 0; i < 5; ++i) CHECK(got.count("parent " + std::to_string(i)) == 1);
  CHECK_FALSE(q.try_get());
}

TEST_CASE("queue: qsize, empty and full are exact once the queue is quiet", "[queue]") {
  mp::Queue<int> q(3);
  CHECK(q.empty());
  for (int i = 0; i < 3; ++i) q.put(i);
  CHECK(q.qsize() == 3);
  CHECK(q.full());
  CHECK(q.get(patience) == 0);
  CHECK(q.qsize() == 2);
  CHECK_FALSE(q.full());
  CHECK_FALSE(q.empty());
}

TEST_CASE("queue: close and join_thread flush, and misuse throws ValueError", "[queue]") {
  mp::Queue<int> q;
  CHECK_THROWS_AS(q.join_thread(), mp::ValueError);
  q.put(1);
  auto reader = q;  // another handle in this process is the same queue, closed with it
  q.close();
  q.join_thread();
  CHECK(q.qsize() == 1);
  CHECK_THROWS_AS(q.put(2), mp::ValueError);
  CHECK_THROWS_AS(reader.get(1ms), mp::ValueError);
  q.close();  // closing twice is harmless
}

TEST_CASE("simple queue: items pass between processes in order", "[queue][simple][ipc]") {
  mp::SimpleQueue<std::string> q;
  CHECK(q.empty());
  Team team;
  team.start(simple_put, q, 100);
  for (int i = 0; i < 100; ++i) CHECK(q.get() == "item " + std::to_string(i));
  CHECK(team.join_all() == std::vector<int>{0});
  CHECK(q.empty());
  q.close();
}

TEST_CASE("queue: a Queue of mp::Object carries values of any packable type", "[queue]") {
  mp::Queue<mp::Object> objects;
  objects.put(mp::Object("text"));
  objects.put(mp::Object(std::vector<int>{1, 2}));
  CHECK(objects.get(patience).as<std::string>() == "text");
  CHECK(objects.get(patience).as<std::vector<int>>() == std::vector<int>{1, 2});
}

TEST_CASE("queue: control blocks live in anonymous shared memory, never in /dev/shm", "[queue][shm]") {
  mp::Queue<int> q;
  mp::JoinableQueue<int> jq;
  mp::SimpleQueue<int> sq;
  q.put(1);
  CHECK(q.get(patience) == 1);
  CHECK(multiproc_test::dev_shm_mappings().empty());
}
