// PoolOptions::task_timeout: a task that overruns is killed with its worker (TimeoutError), the
// worker is replaced and the rest of the pool carries on. (Over a node: tests/test_node.cpp.)
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <thread>

#include "ipc_test_support.hpp"
#include "programs/proc_children.hpp"

using namespace multiproc_test;

namespace {

constexpr auto limit = 300ms;
// How late past its deadline a kill may come: the result thread wakes at the deadline, the
// kill, reap and replacement take milliseconds; the rest is room for a loaded machine.
constexpr auto lateness = 5s;

int square(int x) { return x * x; }
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int block_forever(int) {
  for (;;) ::pause();
}
int block_at_seven(int x) {
  if (x == 7) block_forever(x);
  return x * x;
}
// Says it ran (one byte appended to the file), then never returns.
int mark_and_block(std::string path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  (void)!::write(fd, "x", 1);
  ::close(fd);
  return block_forever(0);
}

// Longer than the limit: the deadline of a worker's first task must not count it.
void slow_initializer() { std::this_thread::sleep_for(2 * limit); }

mp::PoolOptions timed_pool(unsigned processes, std::chrono::milliseconds task_timeout = limit) {
  mp::PoolOptions options;
  options.processes = processes;
  options.task_timeout = task_timeout;
  return options;
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// Bounded poll of what the pool reaches on its own (a replacement worker's start).
template <class Pred>
bool within_patience(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Closes and joins the pool, then checks that no worker of it is left.
void end_pool_leaving_no_process(mp::Pool& pool) {
  pool.close();
  pool.join();
  CHECK(pool.worker_pids().empty());
  CHECK(children_of(::getpid()).empty());
}

} // namespace

TEST_CASE("pool_timeout: a task past task_timeout raises TimeoutError naming the limit; its worker is killed and replaced",
          "[pool]") {
  mp::Pool pool(timed_pool(2));
  auto before = pool.worker_pids();
  REQUIRE(before.size() == 2);
  auto start = std::chrono::steady_clock::now();
  auto result = pool.apply_async(block_forever, 0);
  try {
    result.get(patience);
    FAIL("the blocked task returned");
  } catch (const mp::TimeoutError& e) {
    std::string what = e.what();
    CHECK(what.find("task_timeout (300 ms)") != std::string::npos);
  }
  auto took = std::chrono::steady_clock::now() - start;
  INFO("failed after " << std::chrono::duration<double>(took).count() << " s");
  CHECK(took >= limit);
  CHECK(took < limit + lateness);

  CHECK(within_patience([&] { return pool.worker_pids().size() == 2; }));
  auto after = pool.worker_pids();
  std::vector<pid_t> killed;
  std::ranges::sort(before);
  std::ranges::sort(after);
  std::ranges::set_difference(before, after, std::back_inserter(killed));
  REQUIRE(killed.size() == 1);
  CHECK_FALSE(alive(killed[0]));
  CHECK(pool.map(square, std::vector<int>{1, 2, 3}) == std::vector<int>{1, 4, 9});
  end_pool_leaving_no_process(pool);
}

TEST_CASE("pool_timeout: tasks within the deadline are unaffected and no worker is replaced", "[pool]") {
  mp::Pool pool(timed_pool(2, 2s));
  auto pids = pool.worker_pids();
  std::vector<int> xs(1000);
  std::iota(xs.begin(), xs.end(), 0);
  auto squares = pool.map(square, xs);
  for (int x : xs) CHECK(squares[static_cast<std::size_t>(x)] == x * x);
  CHECK(pool.apply(sleep_ms, 50) == 50);
  // A chunk of 4 tasks of 50 ms each: 200 ms in all, well within 4 x task_timeout.
  CHECK(pool.map(sleep_ms, std::vector<int>(8, 50), 4) == std::vector<int>(8, 50));
  CHECK(pool.worker_pids() == pids);
  end_pool_leaving_no_process(pool);
}

TEST_CASE("pool_timeout: in imap only the slow item fails; map with it raises TimeoutError; the rest carry on",
          "[pool]") {
  mp::Pool pool(timed_pool(3));
  std::vector<int> xs(20);
  std::iota(xs.begin(), xs.end(), 0);
  auto it = pool.imap(block_at_seven, xs);
  for (int x : xs) {
    if (x == 7) {
      CHECK_THROWS_AS(it.next(patience), mp::TimeoutError);
    } else {
      auto got = it.next(patience);
      REQUIRE(got);
      CHECK(*got == x * x);
    }
  }
  CHECK_FALSE(it.next(patience));
  CHECK_THROWS_AS(pool.map(block_at_seven, xs, 5), mp::TimeoutError);
  CHECK(within_patience([&] { return pool.worker_pids().size() == 3; }));
  CHECK(pool.apply(square, 9) == 81);
  end_pool_leaving_no_process(pool);
}

TEST_CASE("pool_timeout: apply_async's error_callback gets the TimeoutError, its callback is not called", "[pool]") {
  mp::Pool pool(timed_pool(1));
  std::atomic<bool> called{false};
  std::exception_ptr error;
  auto result = pool.apply_async(
      block_forever, mp::args(0), [&](const int&) { called = true; }, [&](std::exception_ptr e) { error = e; });
  REQUIRE(result.wait(patience));
  CHECK_FALSE(called);
  REQUIRE(error);
  CHECK_THROWS_AS(std::rethrow_exception(error), mp::TimeoutError);
  CHECK_FALSE(result.successful());
  end_pool_leaving_no_process(pool);
}

TEST_CASE("pool_timeout: a timed-out task is not re-run by task_retries and kills do not count against max_restarts",
          "[pool]") {
  auto dir = std::filesystem::temp_directory_path() / ("mp-timeout-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto log = (dir / "runs").string();
  std::ofstream(log).close();
  auto options = timed_pool(1);
  options.task_retries = 3;
  options.max_restarts = 0;  // a single crash would break the pool
  {
    mp::Pool pool(options);
    for (int round = 0; round < 2; ++round)
      CHECK_THROWS_AS(pool.apply_async(mark_and_block, log).get(patience), mp::TimeoutError);
    CHECK(pool.apply(square, 3) == 9);
    end_pool_leaving_no_process(pool);  // join: nothing is left to re-run
  }
  std::ifstream in(log);
  std::string runs((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(runs == "xx");
  std::filesystem::remove_all(dir);
}

TEST_CASE("pool_timeout: the deadline starts after the worker's initializer, under fork and spawn", "[pool]") {
  for (auto method : {mp::StartMethod::fork, mp::StartMethod::spawn}) {
    auto options = timed_pool(1);
    options.initializer = slow_initializer;
    options.start_method = method;
    mp::Pool pool(options);
    CHECK(pool.apply(square, 4) == 16);
    CHECK_THROWS_AS(pool.apply_async(block_forever, 0).get(patience), mp::TimeoutError);
    CHECK(pool.apply(square, 5) == 25);  // on the replacement, once its initializer ran
    end_pool_leaving_no_process(pool);
  }
}
