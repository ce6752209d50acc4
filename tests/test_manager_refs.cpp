// Manager objects are reference counted as CPython counts them: freed with their last proxy, kept
// alive across a hand-over to another process, given back when a process dies holding them.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <thread>

#include "ipc_test_support.hpp"

using namespace multiproc_test;
using namespace std::chrono_literals;

namespace {

using IntDict = mp::DictProxy<int, int>;

// VmRSS of process pid, in KiB.
long rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  FAIL("no VmRSS for process " << pid);
  return -1;
}

// Whether the server comes to hold `expected` objects within patience: the references of a
// process that ended go back when the server sees its connection close, which it does on its own
// time.
bool objects_become(const mp::BaseManager& manager, std::size_t expected) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (manager.number_of_objects() != expected) {
    if (std::chrono::steady_clock::now() > deadline) {
      UNSCOPED_INFO("the server holds:\n" << manager.debug_info());
      return false;
    }
    std::this_thread::sleep_for(1ms);  // polling the server's count: there is no event to wait on
  }
  return true;
}

mp::ProcessOptions started_by(mp::StartMethod method) { return mp::ProcessOptions{.start_method = method}; }

void read_after_go(IntDict d, mp::EventProxy go) {
  if (!go.wait(patience)) throw mp::TimeoutError("no go");
  if (d.at(1) != 1) throw mp::ValueError("the dict lost its item");
  d.set(2, 2);
}

// Makes three dicts of its own, uses the one it was given, and waits to be killed.
void make_three_and_hold(mp::EventProxy holding, IntDict given, std::string address, std::string authkey) {
  mp::BaseManager client(address, authkey);
  std::vector<IntDict> own;
  for (int i = 0; i < 3; ++i) own.push_back(client.proxy<IntDict>("dict"));
  given.set(1, 1);
  holding.set();
  for (;;) ::pause();
}

void read_stored(mp::DictProxy<int, IntDict> outer) {
  if (outer.at(0).at(1) != 7) throw mp::ValueError("the stored dict lost its item");
}

} // namespace

TEST_CASE("manager refs: 100,000 dicts made and dropped keep the server's RSS flat", "[manager_refs]") {
  auto before = child_pids();
  mp::Manager manager;
  pid_t server = new_child(before);
  auto make_and_drop = [&](int n) {
    for (int i = 0; i < n; ++i) manager.dict<int, int>().set(i, i);
  };
  make_and_drop(10000);  // the server's allocator and tables reach their working size
  long start = rss_kib(server);
  make_and_drop(100000);
  long end = rss_kib(server);
  WARN("server VmRSS " << start << " KiB -> " << end << " KiB over 100,000 dicts made and dropped");
  CHECK(manager.number_of_objects() == 0);
#ifndef __SANITIZE_ADDRESS__
  // Kept, 100,000 dicts (an actor each) would take well over 100 MiB.
  CHECK(end - start < 8 * 1024);
#else
  // ASan's quarantine keeps freed memory (256 MiB of it) on purpose: only the count tells here.
#endif
}

TEST_CASE("manager refs: an object passed to a child outlives the creator's proxy", "[manager_refs]") {
  auto method = GENERATE(mp::StartMethod::fork, mp::StartMethod::spawn);
  INFO("start method " << static_cast<int>(method) << " (fork 0, spawn 1)");
  mp::Manager manager;
  auto go = manager.Event();
  std::optional<mp::Process> child;
  {
    auto d = manager.dict<int, int>();
    d.set(1, 1);
    child.emplace(started_by(method), read_after_go, d, go);
    child->start();
  }
  // The creator's proxy is gone (the Process may still keep its arguments until it is destroyed).
  CHECK(manager.number_of_objects() == 2);
  go.set();
  join_or_kill(*child);
  CHECK(child->exitcode() == 0);
  child.reset();
  CHECK(objects_become(manager, 1));  // the child's end gave its reference back
}

TEST_CASE("manager refs: a process SIGKILLed while holding proxies releases them", "[manager_refs]") {
  auto method = GENERATE(mp::StartMethod::fork, mp::StartMethod::spawn);
  INFO("start method " << static_cast<int>(method) << " (fork 0, spawn 1)");
  mp::Manager manager;
  auto holding = manager.Event();
  std::optional<mp::Process> child;
  {
    auto d = manager.dict<int, int>();
    child.emplace(started_by(method), make_three_and_hold, holding, d, manager.address(), manager.authkey());
    child->start();
  }
  REQUIRE(holding.wait(patience));
  CHECK(manager.number_of_objects() == 5);
  child->kill();
  join_or_kill(*child);
  CHECK(child->exitcode() == -SIGKILL);
  child.reset();
  CHECK(objects_become(manager, 1));
  CHECK(manager.debug_info().find("Event") != std::string::npos);
}

TEST_CASE("manager refs: a proxy stored inside another shared object keeps its referent alive", "[manager_refs]") {
  mp::Manager manager;
  auto outer = manager.dict<int, IntDict>();
  {
    auto inner = manager.dict<int, int>();
    inner.set(1, 7);
    outer.set(0, inner);
  }
  CHECK(manager.number_of_objects() == 2);
  mp::Process reader(started_by(mp::StartMethod::spawn), read_stored, outer);
  reader.start();
  join_or_kill(reader);
  CHECK(reader.exitcode() == 0);
  CHECK(outer.at(0).at(1) == 7);  // read back again, after the reader's copy is gone
  CHECK(objects_become(manager, 2));
}

TEST_CASE("manager refs: a shared typeid's object lives as long as the server", "[manager_refs]") {
  auto path = (std::filesystem::temp_directory_path() / ("mp-refs-" + std::to_string(::getpid()) + ".sock")).string();
  mp::BaseManager manager(path, "key");
  manager.register_typeid("jobs", mp::Builtin::Queue, mp::Scope::shared);
  manager.start();
  std::uint64_t id;
  {
    auto jobs = manager.proxy<mp::QueueProxy<int>>("jobs");
    id = jobs.id();
    jobs.put(5);
  }
  CHECK(manager.number_of_objects() == 1);
  auto again = manager.proxy<mp::QueueProxy<int>>("jobs");
  CHECK(again.id() == id);
  CHECK(again.get() == 5);
  manager.shutdown();
}
