// Manager (Python's SyncManager) and its proxies, used from the parent, child processes, threads
// and pool workers.
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "ipc_test_support.hpp"
#include "thread_limit_support.hpp"

using namespace multiproc_test;
using Dict = mp::DictProxy<mp::Object, mp::Object>;

namespace {

bool process_gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

std::size_t open_fd_count(pid_t pid) {
  std::error_code ec;
  std::filesystem::directory_iterator fds("/proc/" + std::to_string(pid) + "/fd", ec);
  return ec ? 0 : static_cast<std::size_t>(std::distance(fds, std::filesystem::directory_iterator{}));
}

// CPU time the process has used, in clock ticks (user + system, fields 14 and 15 of its stat).
long cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string skip;
  for (int field = 3; field <= 13; ++field) fields >> skip;
  long user = 0, system = 0;
  fields >> user >> system;
  return user + system;
}

// A client that connects and never says a word: its session waits in the handshake, holding a
// descriptor. -1 while the listener's backlog is full.
int silent_client(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return fd;
  int error = errno;
  ::close(fd);
  errno = error;  // EAGAIN: the listener's backlog is full
  return -1;
}

// ---- child process bodies ---------------------------------------------------------------------

void seed_writer(Dict d, mp::ListProxy<int> l) {
  d[1] = "1";
  d["2"] = 2;
  d[0.25] = mp::Object();
  l.append(1);
}

void pid_writer(mp::DictProxy<int, std::string> d, mp::ListProxy<int> l) {
  d[1] = "Python";
  d[2] = "Java";
  d[3] = std::to_string(::getpid());
  l.append(static_cast<int>(::getpid()));
}

void hammer(mp::DictProxy<std::string, int> d, mp::LockProxy lock, int me, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    d[std::to_string(me)] = i + 1;
    std::lock_guard guard(lock);
    d.set("total", d.at("total") + 1);
  }
}

void hold_lock_forever(mp::LockProxy lock, mp::EventProxy acquired) {
  lock.acquire();
  acquired.set();
  for (;;) ::pause();
}

void put_after_event(mp::QueueProxy<int> q, mp::EventProxy go, int value) {
  go.wait();
  q.put(value);
}

void produce(mp::QueueProxy<int> q, int n) {
  for (int i = 0; i < n; ++i) q.put(i);
}

void consume_all(mp::JoinableQueueProxy<int> q, int n) {
  for (int i = 0; i < n; ++i) {
    q.get();
    q.task_done();
  }
}

void notify_when_ready(mp::ConditionProxy cond, mp::ValueProxy<int> ready) {
  std::lock_guard guard(cond);
  ready.set(1);
  cond.notify_all();
}

void set_event(mp::EventProxy e) { e.set(); }

void barrier_party(mp::BarrierProxy b, mp::ListProxy<int> indexes) { indexes.append(b.wait()); }

// Starts a manager, reports its directory and server pid, then waits to be killed.
void own_manager_then_wait(mp::Connection report) {
  auto before = child_pids();
  mp::Manager manager;
  report.send(std::make_pair(std::filesystem::path(manager.address()).parent_path().string(),
                             static_cast<int>(new_child(before))));
  for (;;) ::pause();
}

void call_forever(Dict d, mp::EventProxy started) {
  started.set();
  for (int i = 0;; ++i) d.set(i % 4, i);
}

} // namespace

// ---- the seed examples ------------------------------------------------------------------------

TEST_CASE("manager: ten processes write d[1], d['2'], d[0.25] and append to a list, as in the seed", "[managers]") {
  mp::Manager manager;
  auto d = manager.dict<mp::Object, mp::Object>();
  auto l = manager.list<int>({0, 1, 2, 3, 4});
  Team team;
  for (int i = 0; i < 10; ++i) team.start(seed_writer, d, l);
  for (int code : team.join_all()) CHECK(code == 0);

  CHECK(d.size() == 3);
  CHECK(d.at(1) == mp::Object("1"));
  CHECK(d.at("2") == mp::Object(2));
  CHECK(d.at(0.25).is_nil());
  auto items = l.copy();
  CHECK(items.size() == 15);
  CHECK(std::count(items.begin(), items.end(), 1) == 11);
}

TEST_CASE("manager: three processes write their pids into a dict and a list, as in the seed", "[managers]") {
  mp::Manager manager;
  auto d = manager.dict<int, std::string>();
  auto l = manager.list<int>();
  Team team;
  std::set<int> pids;
  for (int i = 0; i < 3; ++i) pids.insert(*team.start(pid_writer, d, l).pid());
  for (int code : team.join_all()) CHECK(code == 0);
  CHECK(d.at(1) == "Python");
  CHECK(d.at(2) == "Java");
  CHECK(pids.count(std::stoi(d.at(3))) == 1);
  auto listed = l.copy();
  CHECK(std::set<int>(listed.begin(), listed.end()) == pids);
}

// ---- every proxy method -----------------------------------------------------------------------

TEST_CASE("manager: a dict proxy has Python's dict methods and raises KeyError", "[managers]") {
  mp::Manager manager;
  auto d = manager.dict<std::string, int>({{"a", 1}});
  d.set("b", 2);
  d["c"] = 3;
  int c = d["c"];
  CHECK(c == 3);
  CHECK(d.at("a") == 1);
  CHECK(d.get("b") == std::optional<int>(2));
  CHECK(d.get("zz") == std::nullopt);
  CHECK(d.get("zz", 7) == 7);
  CHECK(d.contains("a"));
  CHECK_FALSE(d.contains("zz"));
  CHECK(d.size() == 3);
  CHECK(d.keys() == std::vector<std::string>{"a", "b", "c"});  // insertion order, as in Python
  CHECK(d.values() == std::vector<int>{1, 2, 3});
  CHECK(d.items() == std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}, {"c", 3}});
  CHECK(d.copy() == std::map<std::string, int>{{"a", 1}, {"b", 2}, {"c", 3}});
  CHECK(d.pop("a") == 1);
  CHECK(d.erase("b"));
  CHECK_FALSE(d.erase("b"));
  d.update({{"x", 10}, {"c", 30}});
  CHECK(d.copy() == std::map<std::string, int>{{"c", 30}, {"x", 10}});
  CHECK_THROWS_AS(d.at("missing"), mp::KeyError);
  CHECK_THROWS_WITH(d.pop("missing"), Catch::Contains("'missing'"));
  int ignored = 0;
  CHECK_THROWS_AS(ignored = d["missing"], mp::KeyError);
  d.clear();
  CHECK(d.size() == 0);
}

TEST_CASE("manager: a dict of mp::Object keys tells 1, '1' and 1.5 apart", "[managers]") {
  mp::Manager manager;
  auto d = manager.dict<mp::Object, mp::Object>();
  d[1] = "int";
  d["1"] = "str";
  d[1.5] = mp::Object::Array{1, "x"};
  CHECK(d.size() == 3);
  CHECK(d.at(1).as<std::string>() == "int");
  CHECK(d.at("1").as<std::string>() == "str");
  CHECK(d.at(1.5).repr() == "[1, 'x']");
}

TEST_CASE("manager: a value of the wrong type is TypeError, not garbage", "[managers]") {
  mp::Manager manager;
  auto any = manager.dict<std::string, mp::Object>();
  any["k"] = "text";
  mp::DictProxy<std::string, int> ints(any.ref());
  CHECK_THROWS_AS(ints.at("k"), mp::TypeError);
}

TEST_CASE("manager: values of several megabytes travel both ways", "[managers]") {
  mp::Manager manager;
  auto d = manager.dict<int, std::string>();
  std::string big(5 << 20, 'x');
  big[12345] = 'y';
  d[1] = big;
  CHECK(d.at(1) == big);
  d[2] = "small after big";
  CHECK(d.at(2) == "small after big");
}

TEST_CASE("manager: a list proxy has Python's list methods and raises IndexError and ValueError", "[managers]") {
  mp::Manager manager;
  auto l = manager.list<int>();
  l.append(1);
  l.extend({2, 3, 2});
  CHECK(l.copy() == std::vector<int>{1, 2, 3, 2});
  CHECK(l.size() == 4);
  CHECK(l.at(0) == 1);
  CHECK(l.at(-1) == 2);
  l.set(0, 10);
  l[1] = 20;
  int first = l[0];
  CHECK(first == 10);
  CHECK(l.index(3) == 2);
  CHECK(l.count(2) == 1);
  l.insert(0, 5);
  l.insert(100, 6);  // clamped, as in Python
  CHECK(l.copy() == std::vector<int>{5, 10, 20, 3, 2, 6});
  l.remove(20);
  CHECK(l.pop() == 6);
  CHECK(l.pop(0) == 5);
  CHECK(l.copy() == std::vector<int>{10, 3, 2});
  CHECK_THROWS_AS(l.at(3), mp::IndexError);
  CHECK_THROWS_AS(l.at(-4), mp::IndexError);
  CHECK_THROWS_AS(l.set(7, 1), mp::IndexError);
  CHECK_THROWS_AS(l.remove(99), mp::ValueError);
  CHECK_THROWS_AS(l.index(99), mp::ValueError);
  l.clear();
  CHECK_THROWS_AS(l.pop(), mp::IndexError);
}

TEST_CASE("manager: a Namespace proxy sets, gets, tests and deletes attributes", "[managers]") {
  mp::Manager manager;
  auto ns = manager.Namespace();
  ns.set("x", 1);
  ns.set("name", std::string("multiproc"));
  CHECK(ns.get<int>("x") == 1);
  CHECK(ns.get("name").as<std::string>() == "multiproc");
  CHECK(ns.has("x"));
  ns.del("x");
  CHECK_FALSE(ns.has("x"));
  CHECK_THROWS_AS(ns.get("x"), mp::AttributeError);
  CHECK_THROWS_AS(ns.del("x"), mp::AttributeError);
}

TEST_CASE("manager: Value and Array proxies read and write", "[managers]") {
  mp::Manager manager;
  auto v = manager.Value<double>(1.5);
  CHECK(v.get() == 1.5);
  v.set(2.5);
  CHECK(v.get() == 2.5);
  auto a = manager.Array<int>({1, 2, 3});
  CHECK(a.size() == 3);
  a.set(0, 7);
  a[1] = 8;
  CHECK(a.at(0) == 7);
  CHECK(a.copy() == std::vector<int>{7, 8, 3});
  CHECK_THROWS_AS(a.at(3), mp::IndexError);
}

TEST_CASE("manager: a queue proxy puts, gets, and raises Empty and Full", "[managers]") {
  mp::Manager manager;
  auto q = manager.Queue<int>(2);
  CHECK(q.empty());
  q.put(1);
  q.put(2, 1s);
  CHECK(q.full());
  CHECK(q.qsize() == 2);
  CHECK_THROWS_AS(q.put_nowait(3), mp::Full);
  CHECK_THROWS_AS(q.put(3, 20ms), mp::Full);
  CHECK(q.get() == 1);
  CHECK(q.get(1s) == 2);
  CHECK_THROWS_AS(q.get_nowait(), mp::Empty);
  CHECK_THROWS_AS(q.get(20ms), mp::Empty);
  CHECK(q.try_get() == std::nullopt);
  q.put_nowait(4);
  CHECK(q.try_get() == std::optional<int>(4));
  q.close();
  q.join_thread();
}

TEST_CASE("manager: a queue get that timed out in the server loses no item put later", "[managers]") {
  mp::Manager manager;
  auto q = manager.Queue<int>();
  auto go = manager.Event();
  Team team;
  team.start(put_after_event, q, go, 42);
  CHECK_THROWS_AS(q.get(30ms), mp::Empty);
  go.set();
  CHECK(q.get(10s) == 42);
  for (int code : team.join_all()) CHECK(code == 0);
}

TEST_CASE("manager: short get timeouts racing a producer receive every item exactly once", "[managers]") {
  mp::Manager manager;
  auto q = manager.Queue<int>();
  constexpr int n = 300;
  Team team;
  team.start(produce, q, n);
  std::vector<int> got;
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (static_cast<int>(got.size()) < n && std::chrono::steady_clock::now() < deadline) {
    try {
      got.push_back(q.get(1ms));
    } catch (const mp::Empty&) {
    }
  }
  for (int code : team.join_all()) CHECK(code == 0);
  std::vector<int> expected(n);
  for (int i = 0; i < n; ++i) expected[static_cast<std::size_t>(i)] = i;
  CHECK(got == expected);
  CHECK(q.empty());
}

TEST_CASE("manager: a put blocked on a full queue completes when a consumer makes room", "[managers]") {
  mp::Manager manager;
  auto q = manager.Queue<int>(1);
  q.put(0);
  Team team;
  team.start(produce, q, 3);  // 0, 1, 2: blocks until we get
  for (int expected : {0, 0, 1, 2}) CHECK(q.get(10s) == expected);
  for (int code : team.join_all()) CHECK(code == 0);
}

TEST_CASE("manager: a joinable queue's join waits for every task_done", "[managers]") {
  mp::Manager manager;
  auto q = manager.JoinableQueue<int>();
  CHECK_THROWS_AS(q.task_done(), mp::ValueError);
  for (int i = 0; i < 5; ++i) q.put(i);
  CHECK_FALSE(q.join(10ms));
  Team team;
  team.start(consume_all, q, 5);
  q.join();
  CHECK(q.join(0s));
  for (int code : team.join_all()) CHECK(code == 0);
  mp::JoinableQueueProxy<int> plain(manager.Queue<int>().ref());
  CHECK_THROWS_AS(plain.task_done(), mp::AttributeError);  // a plain Queue has no task_done
}

TEST_CASE("manager: a lock proxy is Lockable and times out in the server", "[managers]") {
  mp::Manager manager;
  auto lock = manager.Lock();
  CHECK_THROWS_AS(lock.release(), mp::ValueError);
  {
    std::lock_guard guard(lock);
    CHECK_FALSE(lock.try_acquire());
    CHECK_FALSE(lock.acquire(20ms));
  }
  CHECK(lock.try_lock());
  lock.unlock();
  std::unique_lock ul(lock, std::try_to_lock);
  CHECK(ul.owns_lock());
}

TEST_CASE("manager: an RLock is reentrant for its owner and refuses release by another thread", "[managers]") {
  mp::Manager manager;
  auto rlock = manager.RLock();
  rlock.acquire();
  CHECK(rlock.acquire(0s));
  bool other_got_it = true;
  bool other_release_refused = false;
  std::thread other([&] {
    other_got_it = rlock.try_acquire();  // this thread has its own connection: another owner
    try {
      rlock.release();
    } catch (const mp::ValueError&) {
      other_release_refused = true;
    }
  });
  other.join();
  CHECK_FALSE(other_got_it);
  CHECK(other_release_refused);
  rlock.release();
  rlock.release();
  CHECK_THROWS_AS(rlock.release(), mp::ValueError);
}

TEST_CASE("manager: semaphores count and a bounded one refuses over-release", "[managers]") {
  mp::Manager manager;
  auto sem = manager.Semaphore(2);
  CHECK(sem.get_value() == 2);
  sem.acquire();
  CHECK(sem.try_acquire());
  CHECK_FALSE(sem.acquire(10ms));
  sem.release();
  sem.release();
  sem.release();
  CHECK(sem.get_value() == 3);  // a plain semaphore may grow
  auto bounded = manager.BoundedSemaphore(1);
  bounded.acquire();
  bounded.release();
  CHECK_THROWS_AS(bounded.release(), mp::ValueError);
  CHECK(manager.Lock().acquire(-1s));  // a negative timeout does not wait: a free lock is taken
}

TEST_CASE("manager: a condition wakes a waiter notified by another process", "[managers]") {
  mp::Manager manager;
  auto cond = manager.Condition();
  auto ready = manager.Value<int>(0);
  CHECK_THROWS_AS(cond.wait(1ms), mp::ValueError);  // not held
  CHECK_THROWS_AS(cond.notify(), mp::ValueError);
  std::unique_lock guard(cond);
  CHECK_FALSE(cond.wait(10ms));  // nobody notifies: times out, lock held again
  Team team;
  team.start(notify_when_ready, cond, ready);
  CHECK(cond.wait_for([&] { return ready.get() == 1; }, std::chrono::duration<double>(patience)));
  guard.unlock();
  for (int code : team.join_all()) CHECK(code == 0);
}

TEST_CASE("manager: an event wait returns once another process sets it", "[managers]") {
  mp::Manager manager;
  auto e = manager.Event();
  CHECK_FALSE(e.is_set());
  CHECK_FALSE(e.wait(10ms));
  Team team;
  team.start(set_event, e);
  CHECK(e.wait(patience));
  CHECK(e.is_set());
  e.wait();
  e.clear();
  CHECK_FALSE(e.is_set());
  for (int code : team.join_all()) CHECK(code == 0);
}

TEST_CASE("manager: a barrier releases its parties together; a timeout or abort breaks it", "[managers]") {
  mp::Manager manager;
  auto b = manager.Barrier(3);
  auto indexes = manager.list<int>();
  CHECK(b.parties() == 3);
  Team team;
  team.start(barrier_party, b, indexes);
  team.start(barrier_party, b, indexes);
  indexes.append(b.wait());
  for (int code : team.join_all()) CHECK(code == 0);
  auto got = indexes.copy();
  CHECK(std::set<int>(got.begin(), got.end()) == std::set<int>{0, 1, 2});

  CHECK_THROWS_AS(b.wait(10ms), mp::BrokenBarrierError);
  CHECK(b.broken());
  b.reset();
  CHECK_FALSE(b.broken());
  CHECK(b.n_waiting() == 0);
  b.abort();
  CHECK_THROWS_AS(b.wait(), mp::BrokenBarrierError);
}

// ---- processes, threads, pools ----------------------------------------------------------------

TEST_CASE("manager: eight processes hammering one dict lose no update", "[managers]") {
  mp::Manager manager;
  auto d = manager.dict<std::string, int>();
  auto lock = manager.Lock();
  d["total"] = 0;
  constexpr int rounds = 100;
  for (int procs : {1, 2, 4, 8}) {
    d["total"] = 0;
    Team team;
    for (int i = 0; i < procs; ++i) team.start(hammer, d, lock, i, rounds);
    for (int code : team.join_all()) CHECK(code == 0);
    CHECK(d.at("total") == procs * rounds);
    for (int i = 0; i < procs; ++i) CHECK(d.at(std::to_string(i)) == rounds);
  }
}

TEST_CASE("manager: a lock held by a process that is killed goes to the next acquirer", "[managers]") {
  mp::Manager manager;
  auto lock = manager.Lock();
  auto acquired = manager.Event();
  Team team;
  auto& holder = team.start(hold_lock_forever, lock, acquired);
  REQUIRE(acquired.wait(patience));
  CHECK_FALSE(lock.try_acquire());
  holder.kill();
  join_or_kill(holder);
  CHECK(lock.acquire(patience));
  lock.release();
}

TEST_CASE("manager: threads of one process use connections of their own", "[managers]") {
  mp::Manager manager;
  auto d = manager.dict<int, int>();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([d, t] {
      for (int i = 0; i < 50; ++i) d[t * 100 + i] = i;
    });
  for (auto& t : threads) t.join();
  CHECK(d.size() == 200);
}

namespace {
int add_to_dict(mp::DictProxy<int, int> d, int key, int value) {
  d[key] = value;
  return static_cast<int>(d.size());
}
} // namespace

TEST_CASE("manager: proxies are MessagePack values and work as pool task arguments", "[managers]") {
  mp::Manager manager;
  auto d = manager.dict<int, int>();
  auto copy = mp::detail::decode<mp::DictProxy<int, int>>(mp::detail::encode(d));
  copy[1] = 10;
  CHECK(d.at(1) == 10);
  CHECK(copy == d);
  mp::Pool pool(2);
  std::vector<mp::AsyncResult<int>> results;
  for (int i = 2; i < 6; ++i) results.push_back(pool.apply_async(add_to_dict, d, i, i * 10));
  for (auto& r : results) r.get(patience);
  CHECK(d.copy() == std::map<int, int>{{1, 10}, {2, 20}, {3, 30}, {4, 40}, {5, 50}});
}

// ---- lifecycle and failure --------------------------------------------------------------------

TEST_CASE("manager: shutdown leaves no process, socket or directory behind", "[managers]") {
  auto before = child_pids();
  mp::Manager manager;
  pid_t server = new_child(before);
  auto dir = std::filesystem::path(manager.address()).parent_path();
  struct stat st {};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  auto d = manager.dict<int, int>();
  d[1] = 1;
  manager.shutdown();
  CHECK(process_gone(server));
  CHECK_FALSE(std::filesystem::exists(dir));
  CHECK_THROWS_AS(d.at(1), mp::Error);
  manager.shutdown();  // twice is fine
}

TEST_CASE("manager: a manager whose owner is killed leaves no process or file behind", "[managers]") {
  auto [report_r, report_w] = mp::Pipe(false);
  Team team;
  auto& owner = team.start(own_manager_then_wait, report_w);
  REQUIRE(report_r.poll(patience));
  auto [dir, server] = report_r.recv<std::pair<std::string, int>>();
  int server_fd = static_cast<int>(::syscall(SYS_pidfd_open, server, 0));
  REQUIRE(server_fd >= 0);
  owner.kill();
  join_or_kill(owner);
  CHECK(mp::connection::wait(std::vector<int>{server_fd}, patience).size() == 1);  // the server ended
  ::close(server_fd);
  CHECK_FALSE(std::filesystem::exists(dir));
}

TEST_CASE("manager: when the server is killed under load every call fails at once", "[managers]") {
  auto before = child_pids();
  mp::Manager manager;
  pid_t server = new_child(before);
  auto d = manager.dict<mp::Object, mp::Object>();
  auto started = manager.Event();
  Team team;
  auto& client = team.start(call_forever, d, started);
  REQUIRE(started.wait(patience));
  ::kill(server, SIGKILL);
  join_or_kill(client);
  CHECK(client.exitcode() == 1);  // its call threw
  auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(d.at(0), mp::Error);
  CHECK_THROWS_AS(d.set(0, 1), mp::Error);
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}

TEST_CASE("manager: a default-constructed proxy names no object", "[managers]") {
  mp::LockProxy lock;
  CHECK_THROWS_AS(lock.acquire(), mp::ValueError);
}

TEST_CASE("manager: at a thread limit Manager() throws OSError instead of hanging and starts once the limit is lifted",
          "[managers]") {
  multiproc_test::check_starts_at_thread_limits("manager");
}

TEST_CASE("manager: a server out of descriptors waits for a free one instead of spinning and then serves again",
          "[managers]") {
#if defined(__SANITIZE_ADDRESS__)
  // UBSan's vptr check reads memory through a pipe it opens: in a process out of descriptors it
  // reports every polymorphic object it checks (the server's OSError for EMFILE) as having an
  // invalid vptr, and the sanitized build stops there.
  WARN("not run under the sanitizers: they need descriptors of their own");
  return;
#endif
  constexpr rlim_t server_fds = 64;
  rlimit normal{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &normal) == 0);
  rlimit low = normal;
  low.rlim_cur = server_fds;
  auto before = child_pids();
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);  // the server inherits it
  std::optional<mp::Manager> manager;
  try {
    manager.emplace();
  } catch (...) {
    ::setrlimit(RLIMIT_NOFILE, &normal);
    throw;
  }
  ::setrlimit(RLIMIT_NOFILE, &normal);
  pid_t server = new_child(before);

  std::vector<int> silent;
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (open_fd_count(server) < server_fds && std::chrono::steady_clock::now() < deadline) {
    if (silent.size() < 4 * server_fds) {
      if (int fd = silent_client(manager->address()); fd >= 0) silent.push_back(fd);
    }
    std::this_thread::yield();
  }
  REQUIRE(open_fd_count(server) >= server_fds);
  // Clients left in the listener's backlog: it stays readable, and accept fails with EMFILE. The
  // loop above may already have filled the backlog (the server accepts while it runs), and a
  // connect to a full backlog fails with EAGAIN: then clients are waiting too.
  for (int waiting = 0; waiting < 4; ++waiting) {
    int fd = silent_client(manager->address());
    if (fd < 0) {
      REQUIRE(errno == EAGAIN);
      break;
    }
    silent.push_back(fd);
  }
  // Spinning on the readable listener took a whole core; waiting takes next to nothing. A
  // generous bound: a loaded machine gives a spinning server less than a core.
  auto ticks = cpu_ticks(server);
  std::this_thread::sleep_for(2s);
  CHECK(cpu_ticks(server) - ticks < ::sysconf(_SC_CLK_TCK) / 5);

  for (int fd : silent) ::close(fd);  // their sessions end and free their descriptors
  CHECK(manager->Value<int>(7).get() == 7);
}
