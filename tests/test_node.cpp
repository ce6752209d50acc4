// Nodes: a Pool's workers on another "host" (a node process serving on loopback, or in a network
// namespace of its own), reached by exported name behind the authkey handshake.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <thread>

#include "ipc_test_support.hpp"
#include "programs/proc_children.hpp"
#include "two_hosts.hpp"

using namespace multiproc_test;

namespace {

constexpr const char* node_env = "MP_TEST_ON_NODE";        // set in node processes only
constexpr const char* fifo_env = "MP_TEST_NODE_FIFO";      // where a node task says it started
const std::string good_key = "the node key";

int square(int x) { return x * x; }
MULTIPROC_EXPORT(square);

int add(int a, int b) { return a + b; }
MULTIPROC_EXPORT(add);

// The pid of the process that started the worker: the node's pid for a worker on the node.
int worker_parent(int) { return static_cast<int>(::getppid()); }
MULTIPROC_EXPORT(worker_parent);

// Quick on a node, slow here: a pool whose local worker is busy must hand chunks to the node.
int node_or_slow_local(int) {
  if (!std::getenv(node_env)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return static_cast<int>(::getppid());
}
MULTIPROC_EXPORT(node_or_slow_local);

// On a node: says so on the FIFO, then never returns (the node will be killed under it).
// Here: squares, slowly enough that the node gets chunks too.
int hang_on_node(int x) {
  if (!std::getenv(node_env)) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  if (const char* fifo = std::getenv(node_env) ? std::getenv(fifo_env) : nullptr) {
    int fd = ::open(fifo, O_WRONLY | O_NONBLOCK);
    if (fd >= 0) {
      (void)!::write(fd, "x", 1);
      ::close(fd);
    }
    ::pause();
  }
  return x * x;
}
MULTIPROC_EXPORT(hang_on_node);

int not_exported(int x) { return x; }

// The name and signature node_helper (tests/programs) exports; this one never runs.
int cube(int x) { return -x; }
MULTIPROC_EXPORT(cube);

void serve_at(const std::string& address, const std::string& fifo, mp::Connection& report) {
  ::setenv(node_env, "1", 1);
  if (!fifo.empty()) ::setenv(fifo_env, fifo.c_str(), 1);
  mp::serve_node(address, good_key, [&](const std::string& bound) { report.send(bound); });
}

void serve_in_child(std::string fifo, mp::Connection report) { serve_at("127.0.0.1:0", fifo, report); }

void serve_on_host(std::string netns, std::string fifo, mp::Connection report) {
  enter_netns(netns);
  serve_at("10.213.0.2:0", fifo, report);
}

// A node process on loopback, killed and reaped at the end of the test.
class Node {
public:
  explicit Node(std::string fifo = "") {
    auto [r, w] = mp::Pipe(false);
    process_ = mp::Process(serve_in_child, std::move(fifo), w);
    process_.start();
    w.close();
    REQUIRE(r.poll(patience));
    address_ = r.recv<std::string>();
  }
  ~Node() { kill(); }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  void kill() {
    if (process_.is_alive()) process_.kill();
    process_.join();
  }
  const std::string& address() const { return address_; }
  int pid() const { return static_cast<int>(process_.pid().value_or(-1)); }
  bool alive() { return process_.is_alive(); }
  void freeze() { ::kill(pid(), SIGSTOP); }

private:
  mp::Process process_;
  std::string address_;
};

mp::PoolOptions node_pool(const std::string& address, unsigned local, unsigned per_node) {
  mp::PoolOptions options;
  options.processes = local;
  options.nodes = {address};
  options.authkey = good_key;
  options.processes_per_node = per_node;
  return options;
}

std::vector<int> squares(int n) {
  std::vector<int> out(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = i * i;
  return out;
}

std::vector<int> range(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// true when something accepts TCP connections at "127.0.0.1:port".
bool listening(const std::string& address) {
  auto port = std::stoi(address.substr(address.rfind(':') + 1));
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return ok;
}

// Bounded poll of what the node does on its own (reaping a worker): nothing to wait on but /proc.
template <class Pred>
bool within_patience(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// A FIFO in a fresh private directory, removed with it.
class Fifo {
public:
  Fifo() {
    std::string templ = (std::filesystem::temp_directory_path() / "mp-node-XXXXXX").string();
    REQUIRE(::mkdtemp(templ.data()));
    dir_ = templ;
    path_ = dir_ + "/started";
    REQUIRE(::mkfifo(path_.c_str(), 0600) == 0);
    fd_ = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(fd_ >= 0);
  }
  ~Fifo() {
    ::close(fd_);
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }
  // Waits until a writer wrote a byte.
  bool wait_written() {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(patience).count())) == 1;
  }

private:
  std::string dir_, path_;
  int fd_ = -1;
};

} // namespace

TEST_CASE("node: MULTIPROC_EXPORT registers a function by its name and by its address", "[node]") {
  const auto* by_name = mp::detail::find_export("square");
  REQUIRE(by_name != nullptr);
  CHECK(by_name->fn == reinterpret_cast<mp::detail::erased_fn>(&square));
  CHECK(by_name->each != nullptr);
  CHECK(mp::detail::find_export(reinterpret_cast<mp::detail::erased_fn>(&square)) == by_name);
  const auto* two_args = mp::detail::find_export("add");
  REQUIRE(two_args != nullptr);
  CHECK(two_args->each == nullptr);  // map needs one argument; starmap/apply take any number
  CHECK(two_args->star != nullptr);
  CHECK(mp::detail::find_export(reinterpret_cast<mp::detail::erased_fn>(&not_exported)) == nullptr);
  CHECK(mp::detail::find_export("not_exported") == nullptr);
}

TEST_CASE("node: Pool.map and apply_async run exported functions on the node's workers", "[node]") {
  Node node;
  mp::Pool pool(node_pool(node.address(), 0, 2));
  CHECK(pool.map(square, range(100)) == squares(100));
  CHECK(pool.apply_async(add, 20, 22).get(patience) == 42);
  auto parents = pool.map(worker_parent, range(20), 1);
  CHECK(std::all_of(parents.begin(), parents.end(), [&](int p) { return p == node.pid(); }));
  pool.close();
  pool.join();
}

TEST_CASE("node: a Pool spreads chunks over its local workers and the node's", "[node]") {
  Node node;
  mp::Pool pool(node_pool(node.address(), 1, 1));
  auto parents = pool.map(node_or_slow_local, range(400), 1);
  auto on_node = std::count(parents.begin(), parents.end(), node.pid());
  auto here = std::count(parents.begin(), parents.end(), static_cast<int>(::getpid()));
  CHECK(on_node > 0);
  CHECK(here > 0);
  CHECK(on_node + here == 400);
}

TEST_CASE("node: an unexported function submitted to a Pool with nodes is ValueError naming MULTIPROC_EXPORT",
          "[node]") {
  Node node;
  mp::Pool pool(node_pool(node.address(), 1, 1));
  CHECK_THROWS_WITH(pool.map(not_exported, range(3)), Catch::Contains("MULTIPROC_EXPORT"));
  CHECK_THROWS_AS(pool.apply_async(not_exported, 1), mp::ValueError);
  CHECK(pool.map(square, range(10)) == squares(10));  // nothing was lost
}

TEST_CASE("node: a wrong authkey is AuthenticationError and the node keeps serving", "[node]") {
  Node node;
  auto options = node_pool(node.address(), 0, 1);
  options.authkey = "not the key";
  CHECK_THROWS_AS(mp::Pool(options), mp::AuthenticationError);
  CHECK(node.alive());
  mp::Pool pool(node_pool(node.address(), 0, 1));
  CHECK(pool.map(square, range(10)) == squares(10));
}

TEST_CASE("node: a Pool with nodes and no authkey is ValueError", "[node]") {
  Node node;
  auto options = node_pool(node.address(), 1, 1);
  options.authkey.clear();
  CHECK_THROWS_AS(mp::Pool(options), mp::ValueError);
}

TEST_CASE("node: garbage and silence on the node's port never crash it", "[node]") {
  Node node;
  for (const char* junk : {"", "GET / HTTP/1.0\r\n\r\n", "\xff\xff\xff\xff garbage that is not a frame"}) {
    mp::connection::Client raw(node.address());  // no authkey: no handshake from this side
    if (*junk) raw.send_bytes(junk);
  }
  mp::Pool pool(node_pool(node.address(), 0, 1));
  CHECK(pool.map(square, range(10)) == squares(10));
  CHECK(node.alive());
}

TEST_CASE("node: a node killed mid-map costs only the task it held (WorkerLost); the pool carries on",
          "[node]") {
  Fifo fifo;
  Node node(fifo.path());
  mp::Pool pool(node_pool(node.address(), 1, 1));
  auto result = pool.map_async(hang_on_node, range(400), 1);
  REQUIRE(fifo.wait_written());  // a chunk is running on the node
  node.kill();
  CHECK_THROWS_AS(result.get(patience), mp::WorkerLost);
  CHECK(pool.map(square, range(20)) == squares(20));  // the local worker carries on
}

TEST_CASE("node: with task_retries the chunk a killed node held runs again elsewhere", "[node]") {
  Fifo fifo;
  Node node(fifo.path());
  auto options = node_pool(node.address(), 1, 1);
  options.task_retries = 1;
  mp::Pool pool(options);
  auto result = pool.map_async(hang_on_node, range(400), 1);
  REQUIRE(fifo.wait_written());
  node.kill();
  CHECK(result.get(patience) == squares(400));
}

TEST_CASE("node: task_timeout kills a task's worker on the node (TimeoutError); the node starts another", "[node]") {
  Fifo fifo;
  Node node(fifo.path());
  auto options = node_pool(node.address(), 0, 1);
  options.task_timeout = std::chrono::milliseconds(500);
  {
    mp::Pool pool(options);
    CHECK(pool.apply(square, 2) == 4);
    auto workers = children_of(node.pid());
    REQUIRE(workers.size() == 1);
    auto start = std::chrono::steady_clock::now();
    auto result = pool.apply_async(hang_on_node, 3);
    REQUIRE(fifo.wait_written());  // it runs on the node
    CHECK_THROWS_AS(result.get(patience), mp::TimeoutError);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(6));
    CHECK(pool.apply(square, 5) == 25);  // on the node's next worker
    CHECK(within_patience([&] { return ::kill(workers[0].pid, 0) != 0; }));  // the node reaped it
    pool.close();
    pool.join();
  }
  CHECK(within_patience([&] { return children_of(node.pid()).empty(); }));
  CHECK(node.alive());
}

TEST_CASE("node: nothing listens and no worker is left after the node and the pool end", "[node]") {
  std::string address;
  {
    Node node;
    address = node.address();
    {
      mp::Pool pool(node_pool(node.address(), 0, 2));
      CHECK(pool.map(square, range(10)) == squares(10));
      pool.close();
      pool.join();
      CHECK(pool.worker_pids().empty());
    }
    CHECK(listening(address));
  }
  if (listening(address)) std::system(("ss -ltnp | grep " + address.substr(address.rfind(':'))).c_str());
  CHECK_FALSE(listening(address));
  CHECK(mp::active_children().empty());
}

TEST_CASE("node: a node that stops answering (SIGSTOP) is dropped by the heartbeat: WorkerLost within 5 s",
          "[node]") {
  Fifo fifo;
  Node node(fifo.path());
  mp::Pool pool(node_pool(node.address(), 0, 1));
  auto result = pool.apply_async(hang_on_node, 1);
  REQUIRE(fifo.wait_written());
  node.freeze();
  auto frozen_at = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(result.get(patience), mp::WorkerLost);
  auto took = std::chrono::steady_clock::now() - frozen_at;
  INFO("dropped after " << std::chrono::duration<double>(took).count() << " s");
  // The heartbeat's bound is 5 s (1 s beats, 4 s timeout); 2 s of slack for a loaded machine.
  CHECK(took < std::chrono::seconds(7));
}

namespace {

// In network namespace a: a pool with one local worker and two on the node at address; reports
// how many of `tasks` ran on the node (node_pid) and whether the rest ran here.
void map_from_host(std::string netns, std::string address, int node_pid, int tasks, mp::Connection report) {
  enter_netns(netns);
  mp::Pool pool(node_pool(address, 1, 2));
  auto parents = pool.map(node_or_slow_local, range(tasks), 1);
  auto on_node = std::count(parents.begin(), parents.end(), node_pid);
  auto here = std::count(parents.begin(), parents.end(), static_cast<int>(::getpid()));
  report.send(std::vector<long>{on_node, here});
}

// In network namespace a: a task whose node (address) is cut off from this host under it;
// reports whether it failed with WorkerLost.
void lose_node_from_host(std::string netns, std::string address, mp::Connection report) {
  enter_netns(netns);
  mp::Pool pool(node_pool(address, 0, 1));
  auto result = pool.apply_async(hang_on_node, 1);
  std::string outcome = "finished";
  try {
    result.get(patience);
  } catch (const mp::WorkerLost&) {
    outcome = "WorkerLost";
  } catch (const std::exception& e) {
    outcome = e.what();
  }
  report.send(outcome);
}

} // namespace

TEST_CASE("node: a Pool on one host runs tasks on a node on another (network namespaces)", "[node][netns]") {
  if (!can_make_hosts()) {
    WARN("skipped: creating network namespaces needs root and iproute2");
    return;
  }
  TwoHosts hosts;
  REQUIRE(hosts.ok());
  auto [node_r, node_w] = mp::Pipe(false);
  Team team;
  auto node_pid = static_cast<int>(team.start(serve_on_host, hosts.b(), std::string(), node_w).pid().value_or(-1));
  REQUIRE(node_r.poll(patience));
  auto address = node_r.recv<std::string>();
  CHECK(address.starts_with("10.213.0.2:"));
  auto [r, w] = mp::Pipe(false);
  team.start(map_from_host, hosts.a(), address, node_pid, 400, w);
  REQUIRE(r.poll(patience));
  auto counts = r.recv<std::vector<long>>();
  CHECK(counts.at(0) > 0);
  CHECK(counts.at(1) > 0);
  CHECK(counts.at(0) + counts.at(1) == 400);
  join_or_kill(team[1]);
  CHECK(team[1].exitcode() == 0);
}

TEST_CASE("node: a node cut off from the pool's host costs the task it held (WorkerLost within 5 s)",
          "[node][netns]") {
  if (!can_make_hosts()) {
    WARN("skipped: creating network namespaces needs root and iproute2");
    return;
  }
  TwoHosts hosts;
  REQUIRE(hosts.ok());
  Fifo fifo;
  auto [node_r, node_w] = mp::Pipe(false);
  Team team;
  team.start(serve_on_host, hosts.b(), fifo.path(), node_w);
  REQUIRE(node_r.poll(patience));
  auto address = node_r.recv<std::string>();
  auto [r, w] = mp::Pipe(false);
  team.start(lose_node_from_host, hosts.a(), address, w);
  REQUIRE(fifo.wait_written());
  REQUIRE(hosts.cut());
  auto cut_at = std::chrono::steady_clock::now();
  REQUIRE(r.poll(patience));
  auto took = std::chrono::steady_clock::now() - cut_at;
  CHECK(r.recv<std::string>() == "WorkerLost");
  INFO("dropped after " << std::chrono::duration<double>(took).count() << " s");
  CHECK(took < std::chrono::seconds(7));
}

TEST_CASE("node: a Pool's workers on a node end when the pool is terminated", "[node]") {
  Node node;
  {
    mp::Pool pool(node_pool(node.address(), 0, 2));
    CHECK(pool.map(square, range(10)) == squares(10));
    // The map ran on the node (no local workers); the second slot may still be connecting.
    CHECK(!children_of(node.pid()).empty());
    pool.terminate();
  }
  // The node learns of it from the closed connections; nothing to wait on but /proc.
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (!children_of(node.pid()).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(children_of(node.pid()).empty());
  CHECK(node.alive());
}

namespace {

// A port nothing listens on right now (the kernel's pick for a socket we close again).
std::string free_loopback_address() {
  mp::connection::Listener probe("127.0.0.1:0");
  return probe.address();
}

void exec_node_helper(std::string address) {
  ::setenv("MULTIPROC_AUTHKEY", good_key.c_str(), 1);
  std::string program = MULTIPROC_TEST_PROGRAMS_DIR "/node_helper";
  ::execl(program.c_str(), program.c_str(), "--multiproc-node", address.c_str(), static_cast<char*>(nullptr));
  std::_Exit(127);
}

} // namespace

TEST_CASE("node: any program that calls mp::init serves with --multiproc-node, its key from the environment",
          "[node]") {
  auto address = free_loopback_address();
  mp::Process node(exec_node_helper, address);
  node.start();
  // The node's own build runs the task: node_helper's cube, not this program's.
  auto deadline = std::chrono::steady_clock::now() + patience;
  std::optional<mp::Pool> pool;
  while (!pool) {
    try {
      pool.emplace(node_pool(address, 0, 1));
    } catch (const mp::OSError&) {
      REQUIRE(node.is_alive());
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling for the port to open
    }
  }
  CHECK(pool->map(cube, range(4)) == std::vector<int>{0, 1, 8, 27});
  pool.reset();
  node.kill();
  node.join();
}
