// Tests for <multiproc/queues.hpp>: Queue, JoinableQueue and SimpleQueue between real processes —
// the seed examples, no loss at exit, bounded and unbounded puts, timeouts that never swallow
// an item, misuse errors, and robustness when producers and consumers are killed at any instant.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
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

// --- producers and consumers killed at any instant ------------------------------------------------

// (producer << 32 | sequence number, payload): payloads of every size class — inline in a
// record, filling most of one, and large enough to travel in a memfd — made from the key, so that
// a torn or misplaced item shows.
using Keyed = std::pair<std::int64_t, std::string>;

std::int64_t key_of(int producer, int seq) { return std::int64_t{producer} << 32 | seq; }
int producer_of(std::int64_t key) { return static_cast<int>(key >> 32); }
int seq_of(std::int64_t key) { return static_cast<int>(key & 0xffffffff); }

std::string payload_for(std::int64_t key) {
  int seq = seq_of(key);
  std::size_t size = seq % 53 == 0 ? 300 << 10 : seq % 17 == 0 ? 40 << 10 : static_cast<std::size_t>(seq % 11);
  std::string s(size, static_cast<char>('a' + (key + producer_of(key)) % 26));
  auto tag = std::to_string(key);
  return size >= tag.size() ? s.replace(0, tag.size(), tag) : s;
}

Keyed keyed(int producer, int seq) {
  auto key = key_of(producer, seq);
  return {key, payload_for(key)};
}

// Puts keyed items until killed; `started` once the first put returned.
void put_keyed_forever(mp::Queue<Keyed> q, int me, mp::Event started) {
  for (int i = 0;; ++i) {
    q.put(keyed(me, i));
    if (i == 0) started.set();
  }
}

void put_keyed(mp::Queue<Keyed> q, int me, int n) {
  for (int i = 0; i < n; ++i) q.put(keyed(me, i));
}

// Every item intact; per producer, sequence numbers 0, 1, 2, ... with none missing or repeated.
// Returns how many items each producer delivered.
std::map<int, int> check_contiguous(const std::vector<Keyed>& got) {
  std::map<int, int> next;
  for (auto& [key, payload] : got) {
    CHECK(payload == payload_for(key));
    CHECK(seq_of(key) == next[producer_of(key)]++);
  }
  return next;
}

// JoinableQueue consumer: counts every item it gets in `seen` (by sequence number), marks it
// done, and stops at a key of -1.
void count_and_mark_done(mp::JoinableQueue<Keyed> q, mp::Array<int> seen) {
  for (;;) {
    auto [key, payload] = q.get(patience);
    if (key == -1) {
      q.task_done();
      return;
    }
    if (payload != payload_for(key)) throw mp::SystemExit{7};
    {
      std::lock_guard guard(seen.get_lock());
      ++seen[static_cast<std::size_t>(seq_of(key))];
    }
    q.task_done();
  }
}

// Takes `n` items, says so, and waits to be killed without marking them done.
void get_and_hold(mp::JoinableQueue<int> q, int n, mp::Event holding) {
  for (int i = 0; i < n; ++i) (void)q.get(patience);
  holding.set();
  mp::Event never;
  (void)never.wait(patience);
}

void get_one(mp::Queue<std::string> q) { (void)q.get(patience); }

void put_big_then_after(mp::Queue<std::string> q, mp::Event sent) {
  q.put(std::string(8 << 20, 'x'));
  q.put("after");
  q.close();
  q.join_thread();
  sent.set();
  mp::Event never;
  (void)never.wait(patience);
}

// Small items, far more than the socket holds, with no reader: the feeder is blocked mid-send.
void put_ints_beyond_the_socket(mp::Queue<int> q, mp::Event returned) {
  for (int i = 0; i < 200000; ++i) q.put(i);
  returned.set();
  mp::Event never;
  (void)never.wait(patience);
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

TEST_CASE("queue: a producer killed at any instant loses only its unsent tail, and qsize and maxsize come back exact",
          "[queue][robust][ipc]") {
  std::size_t maxsize = GENERATE(0, 16);
  for (int round = 0; round < 10; ++round) {
    mp::Queue<Keyed> q(maxsize);
    mp::Event started;
    Team team;
    team.start(put_keyed_forever, q, 1, started);
    REQUIRE(started.wait(patience));
    team.start(put_keyed, q, 2, 400);
    std::vector<Keyed> got;
    for (int i = 0; i < round * 13 % 60; ++i) got.push_back(q.get(patience));
    // Not a synchronisation: spreads the kill over the producer's put/send cycle.
    std::this_thread::sleep_for(std::chrono::microseconds(round * 1733 % 9000));
    team[0].kill();
    join_or_kill(team[0]);
    auto survivor_items = [&] {
      return std::count_if(got.begin(), got.end(), [](const Keyed& k) { return producer_of(k.first) == 2; });
    };
    auto deadline = std::chrono::steady_clock::now() + patience;
    while (survivor_items() < 400 && std::chrono::steady_clock::now() < deadline) got.push_back(q.get(patience));
    join_or_kill(team[1]);
    // Quiet now: qsize() is what is left, exactly.
    std::size_t left = q.qsize();
    for (std::size_t i = 0; i < left; ++i) got.push_back(q.get(patience));
    CHECK_THROWS_AS(q.get(50ms), mp::Empty);
    CHECK(q.qsize() == 0);
    CHECK(q.empty());
    auto delivered = check_contiguous(got);
    CHECK(delivered[2] == 400);
    INFO("round " << round << ": the killed producer delivered " << delivered[1]);
    if (maxsize != 0) {
      for (std::size_t i = 0; i < maxsize; ++i) q.put_nowait(keyed(3, static_cast<int>(i)));
      CHECK(q.full());
      CHECK_THROWS_AS(q.put_nowait(keyed(3, 99)), mp::Full);
    }
  }
}

TEST_CASE("queue: a producer killed while its feeder is blocked on a full socket leaves whole items "
          "(repro_queue_producer_killed)",
          "[queue][robust][ipc]") {
  mp::Queue<int> q;
  mp::Event returned;
  Team team;
  team.start(put_ints_beyond_the_socket, q, returned);
  REQUIRE(returned.wait(patience));
  CHECK(q.qsize() == 200000);
  team[0].kill();
  join_or_kill(team[0]);
  int next = 0;
  auto started = std::chrono::steady_clock::now();
  for (;;) {
    try {
      int item = q.get(200ms);
      CHECK(item == next);
      next = item + 1;
    } catch (const mp::Empty&) {
      break;
    }
  }
  // get(timeout) kept its timeout on the queue the dead producer left (bounded, not timed).
  CHECK(std::chrono::steady_clock::now() - started < patience);
  CHECK(next > 0);
  CHECK(next < 200000);
  CHECK(q.qsize() == 0);
  q.put(-1);
  CHECK(q.get(patience) == -1);
}

TEST_CASE("queue: a consumer killed while reading a large item loses only that item "
          "(repro_queue_consumer_killed)",
          "[queue][robust][ipc]") {
  for (int round = 0; round < 8; ++round) {
    mp::Queue<std::string> q;
    mp::Event sent;
    Team team;
    team.start(put_big_then_after, q, sent);
    REQUIRE(sent.wait(patience));
    mp::Process consumer(get_one, q);
    consumer.start();
    // Not a synchronisation: lands the kill before, during or after the consumer's get.
    std::this_thread::sleep_for(std::chrono::microseconds(round * round * 400));
    consumer.kill();
    join_or_kill(consumer);
    auto first = q.get(patience);
    if (first != "after") {
      CHECK(first == std::string(8 << 20, 'x'));
      CHECK(q.get(patience) == "after");
    }
    CHECK(q.qsize() == 0);
    CHECK_THROWS_AS(q.get(10ms), mp::Empty);
  }
}

TEST_CASE("joinable queue: consumers killed at any instant lose at most the item each was getting, "
          "and join reports or finishes",
          "[queue][joinable][robust][ipc]") {
  std::size_t maxsize = GENERATE(0, 8);
  constexpr int n = 1500;
  constexpr int kills = 12;
  mp::JoinableQueue<Keyed> q(maxsize);
  mp::Array<int> seen(n);
  Team producers;
  producers.start(put_keyed, static_cast<mp::Queue<Keyed>>(q), 1, n);
  std::vector<mp::Process> consumers;
  for (int i = 0; i < 3; ++i) {
    consumers.emplace_back(count_and_mark_done, q, seen);
    consumers.back().start();
  }
  for (int k = 0; k < kills; ++k) {
    std::this_thread::sleep_for(std::chrono::microseconds(k * 977 % 4000));
    auto& victim = consumers[static_cast<std::size_t>(k) % consumers.size()];
    victim.kill();
    join_or_kill(victim);
    victim = mp::Process(count_and_mark_done, q, seen);
    victim.start();
  }
  CHECK(producers.join_all() == std::vector<int>{0});
  for (std::size_t i = 0; i < consumers.size(); ++i) q.put({-1, ""});
  for (auto& c : consumers) {
    join_or_kill(c);
    CHECK(c.exitcode() == 0);
  }
  int total = 0;
  for (int count : seen.to_vector()) {
    CHECK(count <= 1);
    total += count;
  }
  CHECK(total >= n - kills);
  CHECK(q.qsize() == 0);
  bool finished = false;
  try {
    finished = q.join(patience);
  } catch (const mp::ProcessError& e) {
    CHECK_THAT(e.what(), Catch::Contains("died holding"));
    finished = q.join(patience);
  }
  CHECK(finished);
}

TEST_CASE("joinable queue: join raises ProcessError naming a consumer that died between get and task_done",
          "[queue][joinable][robust][ipc]") {
  mp::JoinableQueue<int> q;
  for (int i = 0; i < 3; ++i) q.put(i);
  mp::Event holding;
  mp::Process consumer(get_and_hold, q, 2, holding);
  consumer.start();
  REQUIRE(holding.wait(patience));
  auto pid = std::to_string(*consumer.pid());
  // One join already waiting when the consumer dies, one started after.
  std::optional<std::string> waiting_error;
  std::thread waiter([&] {
    try {
      (void)q.join(patience);
    } catch (const mp::ProcessError& e) {
      waiting_error = e.what();
    }
  });
  consumer.kill();
  join_or_kill(consumer);
  waiter.join();
  REQUIRE(waiting_error);
  CHECK_THAT(*waiting_error, Catch::Contains("process " + pid) && Catch::Contains("holding 2 item"));
  // The two held items are written off: the third is all a join waits for now.
  CHECK_FALSE(q.join(10ms));
  CHECK(q.get(patience) == 2);
  q.task_done();
  CHECK(q.join(patience));
}

TEST_CASE("joinable queue: a join started after the death was noticed elsewhere still reports it once",
          "[queue][joinable][robust][ipc]") {
  mp::JoinableQueue<int> q;
  q.put(7);
  mp::Event holding;
  mp::Process consumer(get_and_hold, q, 1, holding);
  consumer.start();
  REQUIRE(holding.wait(patience));
  consumer.kill();
  join_or_kill(consumer);
  CHECK(q.qsize() == 0);  // looks for the dead, and finds this one
  CHECK_THROWS_AS(q.join(patience), mp::ProcessError);
  CHECK(q.join(0ms));
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
