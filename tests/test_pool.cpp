#include <catch2/catch.hpp>

#include <dirent.h>
#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../actors/pool_supervisor.hpp"
#include "other_thread.hpp"
#include "thread_limit_support.hpp"
#include "multiproc/multiproc.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

constexpr auto patience = 30s;  // bound on every wait; tasks finish in milliseconds

int square(int x) { return x * x; }
std::int64_t negate64(std::int64_t x) { return -x; }
double halve(float x) { return x / 2.0; }
int add(int a, int b) { return a + b; }
pid_t worker_pid(int) { return ::getpid(); }
std::string worker_name(int) { return mp::current_process().name; }
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
void do_nothing(int) {}
int throw_runtime_error(int x) { throw std::runtime_error("bad input " + std::to_string(x)); }
struct not_a_std_exception {};
int throw_non_std(int) { throw not_a_std_exception{}; }
int kill_self_at_three(int x) {
  if (x == 3) ::raise(SIGKILL);
  return x;
}
int segfault(int x) {
  volatile int* nowhere = nullptr;
  *nowhere = x;
  return x;
}
int crash(int) {
  ::raise(SIGKILL);
  return 0;
}
int block_forever(int) {
  for (;;) ::pause();
}
std::string ten_mebibytes(int) { return std::string(10u << 20, 'x'); }

int initialized = 0;
void set_initialized() { initialized = 42; }
int read_initialized(int) { return initialized; }

std::vector<pid_t> children_of_this_process() {
  std::vector<pid_t> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "children");
    for (pid_t pid; in >> pid;) out.push_back(pid);
  }
  return out;
}

std::size_t open_fd_count() {
  return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                                                std::filesystem::directory_iterator{}));
}

// Bounded poll of a condition the pool reaches on its own (a replacement worker's start).
template <class Pred>
bool eventually(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

std::vector<int> iota(int n) {
  std::vector<int> xs(static_cast<std::size_t>(n));
  std::iota(xs.begin(), xs.end(), 0);
  return xs;
}

std::vector<int> squares(int n) {
  std::vector<int> out;
  for (int x : iota(n)) out.push_back(x * x);
  return out;
}

// A pipe made before a pool, so that its workers hold both ends: a task signals the test
// through it while the test is still inside the call that submitted the task.
struct signal_pipe {
  int fds[2];
  signal_pipe() { REQUIRE(::pipe(fds) == 0); }
  ~signal_pipe() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  bool post() const { return ::write(fds[1], "x", 1) == 1; }
  // Whether a signal came within patience (and takes it).
  bool take() const {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(patience).count())) != 1) return false;
    char c;
    return ::read(fds[0], &c, 1) == 1;
  }
};
const signal_pipe* task_signal = nullptr;  // set before the pool forks its workers

int signal_at_zero(int x) {
  if (x == 0 && !task_signal->post()) return -1;
  return x;
}
int wait_signal_at_last(int x) {
  if (x == 19 && !task_signal->take()) return -1;
  return x;
}

// An item whose conversion to the task's int parameter runs while the pool packs the call:
// the gate waits for the task signal, the bomb throws.
struct gated_item {
  int value;
  bool gate;
  bool* opened;
  operator int() const {
    if (gate) *opened = task_signal->take();
    return value;
  }
};
struct bomb_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct bomb_item {
  int value;
  operator int() const {
    if (value < 0) throw bomb_error("item " + std::to_string(-value) + " cannot be packed");
    return value;
  }
};

} // namespace

TEST_CASE("pool: apply_async returns the task's result through get", "[pool]") {
  mp::Pool pool(2);
  auto result = pool.apply_async(square, 7);
  CHECK(result.get(patience) == 49);
  CHECK(result.ready());
  CHECK(result.successful());
  CHECK(pool.apply(add, 2, 3) == 5);
}

TEST_CASE("pool: map returns every result in order at any chunksize", "[pool]") {
  for (unsigned processes : {1u, 2u, 4u}) {
    mp::Pool pool(processes);
    for (std::size_t chunksize : {0u, 1u, 7u}) CHECK(pool.map(square, iota(100), chunksize) == squares(100));
    CHECK(pool.map(square, std::vector<int>{}).empty());
  }
}

TEST_CASE("pool: map carries numbers of every MessagePack width and sign exactly", "[pool]") {
  mp::Pool pool(2);
  std::vector<std::int64_t> ints{0, 1, -1, -32, -33, 127, 128, -128, -129, 255, 256, 65535, 65536, -32768,
                                 -32769, 4294967295LL, 4294967296LL, INT32_MIN, INT32_MIN - 1LL,
                                 INT64_MAX, INT64_MIN + 1};
  auto negated = pool.map(negate64, ints, 3);
  for (std::size_t i = 0; i < ints.size(); ++i) REQUIRE(negated[i] == -ints[i]);
  std::vector<float> floats{0.0f, -1.5f, 3.25f, 1e30f};
  auto halves = pool.map(halve, floats);
  for (std::size_t i = 0; i < floats.size(); ++i) REQUIRE(halves[i] == floats[i] / 2.0);
}

TEST_CASE("pool: imap is an input range of results in order", "[pool]") {
  mp::Pool pool(2);
  std::vector<int> got;
  for (int r : pool.imap(square, iota(20))) got.push_back(r);
  CHECK(got == squares(20));
  auto it = pool.imap(square, iota(3), 2);
  CHECK(it.next(patience) == 0);
  CHECK(it.next(patience) == 1);
  CHECK(it.next(patience) == 4);
  CHECK(it.next(patience) == std::nullopt);
}

TEST_CASE("pool: imap_unordered yields every result once", "[pool]") {
  mp::Pool pool(2);
  std::multiset<int> got;
  for (int r : pool.imap_unordered(square, iota(50), 3)) got.insert(r);
  auto expected = squares(50);
  CHECK(got == std::multiset<int>(expected.begin(), expected.end()));
}

TEST_CASE("pool: starmap and starmap_async apply argument tuples", "[pool]") {
  mp::Pool pool(2);
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  CHECK(pool.starmap_async(add, pairs).get(patience) == std::vector<int>{3, 7, 11});
  CHECK(pool.starmap(add, std::vector<std::pair<int, int>>{{10, 1}}) == std::vector<int>{11});
}

TEST_CASE("pool: map_async's callback extends a vector before the result is ready", "[pool]") {
  mp::Pool pool(2);
  std::vector<int> collected;
  auto result = pool.map_async(square, iota(10), 0, [&](const std::vector<int>& rs) {
    collected.insert(collected.end(), rs.begin(), rs.end());
  });
  REQUIRE(result.wait(patience));
  CHECK(collected == squares(10));
}

TEST_CASE("pool: apply_async callbacks run one at a time in the result thread", "[pool]") {
  mp::Pool pool(2);
  std::vector<int> appended;  // unsynchronized on purpose: callbacks never overlap
  std::set<std::thread::id> threads;
  std::vector<mp::AsyncResult<int>> results;
  for (int x : iota(10))
    results.push_back(pool.apply_async(square, mp::args(x), [&](const int& r) {
      appended.push_back(r);
      threads.insert(std::this_thread::get_id());
    }));
  for (auto& r : results) REQUIRE(r.wait(patience));
  std::sort(appended.begin(), appended.end());
  CHECK(appended == squares(10));
  CHECK(threads.size() == 1);
  CHECK(threads.count(std::this_thread::get_id()) == 0);
}

TEST_CASE("pool: a callback that throws is reported and the pool keeps serving", "[pool]") {
  mp::Pool pool(1);
  auto bad = pool.apply_async(square, mp::args(2), [](const int&) { throw std::logic_error("callback bug"); });
  REQUIRE(bad.wait(patience));
  CHECK(bad.get() == 4);
  CHECK(pool.apply(square, 3) == 9);
}

TEST_CASE("pool: IMapIterator::next(timeout) throws TimeoutError while the task runs", "[pool]") {
  mp::Pool pool(1);
  auto it = pool.imap(sleep_ms, std::vector<int>{300});
  CHECK_THROWS_AS(it.next(10ms), mp::TimeoutError);
  CHECK(it.next(patience) == 300);
  CHECK(it.next() == std::nullopt);
}

TEST_CASE("pool: close then join waits for the submitted tasks and ends the workers", "[pool]") {
  mp::Pool pool(2);
  auto result = pool.map_async(sleep_ms, std::vector<int>(6, 20), 1);
  auto pids = pool.worker_pids();
  pool.close();
  CHECK_THROWS_AS(pool.apply_async(square, 1), mp::ValueError);
  pool.join();
  CHECK(result.ready());
  CHECK(result.get() == std::vector<int>(6, 20));
  auto children = children_of_this_process();
  for (pid_t pid : pids) CHECK(std::find(children.begin(), children.end(), pid) == children.end());
}

TEST_CASE("pool: terminate stops 100 pending sleeping tasks quickly", "[pool]") {
  mp::Pool pool(2);
  std::vector<mp::AsyncResult<int>> results;
  for (int i = 0; i < 100; ++i) results.push_back(pool.apply_async(sleep_ms, 1000));
  auto start = std::chrono::steady_clock::now();
  pool.terminate();
  pool.join();
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  for (auto& r : results) {
    REQUIRE(r.ready());
    CHECK_THROWS_AS(r.get(), mp::ProcessError);
  }
}

TEST_CASE("pool: maxtasksperchild replaces workers after that many tasks", "[pool]") {
  mp::PoolOptions options;
  options.processes = 1;
  options.maxtasksperchild = 2;
  mp::Pool pool(options);
  auto pids = pool.map(worker_pid, iota(6), 1);
  CHECK(std::set<pid_t>(pids.begin(), pids.end()).size() == 3);
}

TEST_CASE("pool: the initializer runs in every worker, restarted ones too", "[pool]") {
  mp::PoolOptions options;
  options.processes = 2;
  options.initializer = set_initialized;
  options.maxtasksperchild = 1;
  mp::Pool pool(options);
  CHECK(pool.map(read_initialized, iota(6), 1) == std::vector<int>(6, 42));
  CHECK(initialized == 0);
}

TEST_CASE("pool: workers are named ForkPoolWorker-N", "[pool]") {
  mp::Pool pool(2);
  for (const auto& name : pool.map(worker_name, iota(4), 1)) CHECK(name.rfind("ForkPoolWorker-", 0) == 0);
}

TEST_CASE("pool: a worker killed mid-task fails only that task and is replaced", "[pool]") {
  mp::Pool pool(2);
  std::vector<mp::AsyncResult<int>> results;
  for (int x : iota(10)) results.push_back(pool.apply_async(kill_self_at_three, x));
  for (int x : iota(10)) {
    if (x == 3) {
      try {
        results[3].get(patience);
        FAIL("the killed task returned");
      } catch (const mp::WorkerLost& e) {
        CHECK(e.exitcode() == -SIGKILL);
      }
    } else {
      CHECK(results[static_cast<std::size_t>(x)].get(patience) == x);
    }
  }
  CHECK(eventually([&] { return pool.worker_pids().size() == 2; }));
  CHECK(pool.apply(square, 5) == 25);
}

TEST_CASE("pool: a task that segfaults fails with WorkerLost", "[pool]") {
  mp::Pool pool(1);
  auto result = pool.apply_async(segfault, 1);
  try {
    result.get(patience);
    FAIL("the segfaulting task returned");
  } catch (const mp::WorkerLost& e) {
#if !defined(__SANITIZE_ADDRESS__)
    CHECK(e.exitcode() == -SIGSEGV);
#endif
    CHECK(e.exitcode() != 0);
  }
  CHECK(pool.apply(square, 4) == 16);
}

TEST_CASE("pool: more crashes than max_restarts break the pool", "[pool]") {
  mp::PoolOptions options;
  options.processes = 1;
  options.max_restarts = 2;
  mp::Pool pool(options);
  for (int i = 0; i < 3; ++i) CHECK_THROWS_AS(pool.apply(crash, i), mp::WorkerLost);
  CHECK_THROWS_AS(pool.apply_async(square, 1).get(patience), mp::BrokenPool);
  CHECK_THROWS_AS(pool.map(square, iota(5)), mp::BrokenPool);
}

TEST_CASE("pool: a broken pool settles every result including the tasks queued on a worker that dies after the break",
          "[pool]") {
  mp::PoolOptions options;
  options.processes = 2;
  options.max_restarts = 0;  // the first crash breaks the pool
  mp::Pool pool(options);
  // Trivial tasks first: each worker measures itself fast and takes several tasks at a time.
  REQUIRE(pool.map(square, iota(200), 1) == squares(200));
  std::vector<mp::AsyncResult<int>> blocked;
  for (int x : iota(8)) blocked.push_back(pool.apply_async(block_forever, x));  // 4 per worker
  // The first death breaks the pool; the tasks the second had queued behind its running one
  // are settled after the break.
  for (pid_t pid : pool.worker_pids()) ::kill(pid, SIGKILL);
  int lost = 0, broken = 0;
  for (auto& r : blocked) {
    REQUIRE(r.wait(patience));
    try {
      r.get();
      FAIL("a task that blocks forever returned");
    } catch (const mp::WorkerLost&) {
      ++lost;
    } catch (const mp::BrokenPool&) {
      ++broken;
    }
  }
  CHECK(lost == 2);  // the task each worker was running
  CHECK(broken == 6);
  CHECK_THROWS_AS(pool.apply_async(square, 1).get(patience), mp::BrokenPool);
}

TEST_CASE("pool: restart intensity allows max_restarts crashes per window", "[pool]") {
  using clock = mp::actors::restart_intensity::clock;
  mp::actors::restart_intensity intensity(2, std::chrono::seconds(60));
  auto t0 = clock::now();
  CHECK(intensity.record(t0));
  CHECK(intensity.record(t0 + 1s));
  CHECK_FALSE(intensity.record(t0 + 2s));
  mp::actors::restart_intensity spread(2, std::chrono::seconds(10));
  for (int i = 0; i < 10; ++i) CHECK(spread.record(t0 + std::chrono::seconds(6 * i)));
}

TEST_CASE("pool: exceptions thrown by tasks come back as RemoteError", "[pool]") {
  mp::Pool pool(1);
  try {
    pool.apply(throw_runtime_error, 7);
    FAIL("no exception");
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name() == "std::runtime_error");
    CHECK(std::string(e.what()).find("bad input 7") != std::string::npos);
  }
  try {
    pool.apply(throw_non_std, 0);
    FAIL("no exception");
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name().find("not_a_std_exception") != std::string::npos);
  }
  std::exception_ptr received;
  auto r = pool.apply_async(throw_runtime_error, mp::args(1), {}, [&](std::exception_ptr e) { received = e; });
  REQUIRE(r.wait(patience));
  CHECK_FALSE(r.successful());
  REQUIRE(received);
  CHECK_THROWS_AS(std::rethrow_exception(received), mp::RemoteError);
  CHECK_THROWS_AS(pool.map(throw_runtime_error, iota(10), 3), mp::RemoteError);
}

TEST_CASE("pool: a 10 MiB result arrives whole", "[pool]") {
  mp::Pool pool(1);
  auto big = pool.apply(ten_mebibytes, 0);
  CHECK(big.size() == (10u << 20));
  CHECK(big.find_first_not_of('x') == std::string::npos);
}

TEST_CASE("pool: 20k tiny tasks all complete", "[pool]") {
  mp::Pool pool(2);
  CHECK(pool.map(square, iota(20000), 1) == squares(20000));
  std::vector<mp::AsyncResult<int>> results;
  for (int x : iota(2000)) results.push_back(pool.apply_async(square, x));
  long sum = 0;
  for (auto& r : results) sum += r.get(patience);
  auto expected = squares(2000);
  CHECK(sum == std::accumulate(expected.begin(), expected.end(), 0L));
}

TEST_CASE("pool: AsyncResult<void> waits for a task without a result", "[pool]") {
  mp::Pool pool(1);
  mp::AsyncResult<void> r = pool.apply_async(do_nothing, 1);
  r.get(patience);
  CHECK(r.successful());
  int called = 0;
  auto with_callback = pool.apply_async(do_nothing, mp::args(2), [&] { ++called; });
  REQUIRE(with_callback.wait(patience));
  CHECK(called == 1);
}

TEST_CASE("pool: misuse throws ValueError", "[pool]") {
  mp::Pool pool(1);
  SECTION("successful() before the result is ready") {
    auto r = pool.apply_async(sleep_ms, 200);
    CHECK_THROWS_AS(r.successful(), mp::ValueError);
    REQUIRE(r.wait(patience));
    CHECK(r.successful());
  }
  SECTION("join() before close()") { CHECK_THROWS_AS(pool.join(), mp::ValueError); }
  SECTION("submitting after close() or terminate()") {
    pool.close();
    CHECK_THROWS_AS(pool.apply_async(square, 1), mp::ValueError);
    CHECK_THROWS_AS(pool.map(square, iota(3)), mp::ValueError);
    pool.terminate();
    CHECK_THROWS_AS(pool.imap(square, iota(3)), mp::ValueError);
  }
}

TEST_CASE("pool: pools destroyed right after they start leave no descriptor behind", "[pool]") {
  { mp::Pool warm_up(1); }  // loads the actor plugin, which stays
  auto fds = open_fd_count();
  for (int round = 0; round < 10; ++round) mp::Pool pool(2);  // the supervisor stops as it starts
  CHECK(open_fd_count() == fds);
}

TEST_CASE("pool: three pools in a row leave no process or descriptor behind", "[pool]") {
  { mp::Pool warm_up(1); }  // the process's actor system stays; its descriptors are not the pool's
  auto fds = open_fd_count();
  auto children = children_of_this_process().size();
  for (int round = 0; round < 3; ++round) {
    mp::Pool pool(2);
    CHECK(pool.map(square, iota(100)) == squares(100));
    pool.close();
    pool.join();
    CHECK(children_of_this_process().size() == children);
    CHECK(open_fd_count() == fds);
  }
  {
    mp::Pool pool(2);
    pool.apply(square, 1);
  }  // the destructor terminates
  CHECK(children_of_this_process().size() == children);
  CHECK(open_fd_count() == fds);
}

namespace {

// The file libmultiproc was loaded from, as the dynamic loader found it.
std::filesystem::path loaded_libmultiproc() {
  Dl_info info{};
  REQUIRE(::dladdr(reinterpret_cast<const void*>(&mp::cpu_count), &info) != 0);
  return info.dli_fname;
}

} // namespace

TEST_CASE("pool: without the actor plugin next to libmultiproc, Pool raises ImportError naming the path", "[pool]") {
  // A directory with a copy of libmultiproc and no plugin; the helper program loads that copy.
  auto dir = std::filesystem::temp_directory_path() / ("multiproc-no-plugins-" + std::to_string(::getpid()));
  std::filesystem::create_directory(dir);
  auto lib = loaded_libmultiproc();
  std::filesystem::copy_file(lib, dir / lib.filename());
  std::string command =
      "LD_LIBRARY_PATH=" + dir.string() + " timeout 60 " MULTIPROC_TEST_PROGRAMS_DIR "/missing_plugins_helper";
  FILE* out = ::popen(command.c_str(), "r");
  std::string output;
  char buf[512];
  while (out && std::fgets(buf, sizeof buf, out)) output += buf;
  int status = out ? ::pclose(out) : -1;
  std::filesystem::remove_all(dir);
  INFO(output);
  CHECK(output.find("pool: ImportError: cannot load " + (dir / "libmultiproc_actors.so").string()) != std::string::npos);
  CHECK(output.find("log: ImportError: cannot load " + (dir / "libmultiproc_log.so").string()) != std::string::npos);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("pool: at a thread limit Pool() throws OSError instead of hanging and starts once the limit is lifted",
          "[pool]") {
  multiproc_test::check_starts_at_thread_limits("pool");
}

TEST_CASE("pool: map runs its first chunk while its later items are still being packed", "[pool]") {
  signal_pipe pipe;
  task_signal = &pipe;
  mp::Pool pool(2);
  // Chunks of 10000 numbers are each a segment of their own: the first is handed to a worker
  // before the last item is converted, and that conversion waits for the first task's signal.
  bool opened = false;
  std::vector<gated_item> items;
  for (int i = 0; i < 40000; ++i) items.push_back({i, i == 39999, &opened});
  auto got = pool.map(signal_at_zero, items, 10000);
  CHECK(opened);
  REQUIRE(got.size() == items.size());
  CHECK(got.front() == 0);
  CHECK(got.back() == 39999);
}

TEST_CASE("pool: an item that throws while a map is packed reaches the caller, and the pool carries on", "[pool]") {
  mp::Pool pool(2);
  std::vector<bomb_item> items;
  for (int i = 0; i < 50000; ++i) items.push_back({i == 45000 ? -i : i});
  bool called = false;
  // Chunks sent before the bad item run; the call fails as a whole, its callbacks never run.
  CHECK_THROWS_AS(pool.map_async(square, items, 5000, [&](const std::vector<int>&) { called = true; },
                                 [&](std::exception_ptr) { called = true; }),
                  bomb_error);
  CHECK_THROWS_AS(pool.imap(square, items, 5000), bomb_error);
  CHECK(pool.map(square, iota(1000)) == squares(1000));
  auto pids = pool.worker_pids();
  pool.close();
  pool.join();  // returns: the failed calls' chunks that were sent are all accounted for
  CHECK_FALSE(called);
  auto children = children_of_this_process();
  for (pid_t pid : pids) CHECK(std::find(children.begin(), children.end(), pid) == children.end());
}

// CAF 0.17.6's actor system, released with the pool, waited forever for the logger reference
// the creating thread kept.
TEST_CASE("pool: join and destruction on another thread than the one that made the pool return",
          "[pool]") {
  auto pool = std::make_unique<mp::Pool>(2);
  CHECK(pool->map(square, std::vector<int>{1, 2, 3}) == std::vector<int>{1, 4, 9});
  pool->close();
  multiproc_test::run_on_another_thread([&] {
    pool->join();
    pool.reset();
  }, patience, "Pool::join and ~Pool");
  CHECK_FALSE(pool);
}

TEST_CASE("pool: a map of two million items returns every result in order", "[pool]") {
  mp::Pool pool(2);
  std::vector<std::int64_t> items(2'000'000);
  std::iota(items.begin(), items.end(), std::int64_t{-1'000'000});
  auto got = pool.map(negate64, items);
  REQUIRE(got.size() == items.size());
  for (std::size_t i = 0; i < items.size(); ++i) REQUIRE(got[i] == -items[i]);
  std::size_t seen = 0;
  for (auto r : pool.imap(negate64, items, 4096)) REQUIRE(r == -items[seen++]);
  CHECK(seen == items.size());
}

TEST_CASE("pool: imap yields its first result while its last task still waits for the caller", "[pool]") {
  signal_pipe pipe;
  task_signal = &pipe;
  mp::Pool pool(2);
  auto it = pool.imap(wait_signal_at_last, iota(20), 1);
  CHECK(it.next(patience) == 0);
  REQUIRE(pipe.post());  // only now can the last task finish
  std::vector<int> rest;
  while (auto r = it.next(patience)) rest.push_back(*r);
  CHECK(rest.size() == 19);
  CHECK(rest.back() == 19);
}
