// Helpers shared by the tests of queues, synchronization primitives and shared memory: a team of
// child processes that is always reaped, bounded joins, and a witness that shared objects are
// anonymous mappings rather than named /dev/shm segments.
#pragma once

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "multiproc/multiproc.hpp"
#include <catch2/catch.hpp>

namespace multiproc_test {

namespace mp = multiproc;
using namespace std::chrono_literals;

inline constexpr auto patience = std::chrono::seconds(30);  // bound on every wait for a process

// Polls a condition that another process makes true (one with no event to wait on), within
// patience.
template <class Pred>
bool eventually(Pred pred) {
  auto end = std::chrono::steady_clock::now() + patience;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

// Joins p within patience; kills it and fails the test otherwise.
inline void join_or_kill(mp::Process& p) {
  if (!p.join(patience)) {
    p.kill();
    p.join();
    FAIL("child process " << p.name() << " did not finish in time");
  }
}

// Child processes started together and joined (or killed) together.
class Team {
public:
  Team() = default;
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;
  ~Team() {
    for (auto& p : members_)
      if (p.is_alive()) {
        p.kill();
        p.join();
      }
  }
  template <class F, class... Args>
  mp::Process& start(F target, Args... args) {
    members_.emplace_back(std::move(target), std::move(args)...);
    members_.back().start();
    return members_.back();
  }
  // Joins every member; returns their exit codes in start order.
  std::vector<int> join_all() {
    std::vector<int> codes;
    for (auto& p : members_) {
      join_or_kill(p);
      codes.push_back(p.exitcode().value_or(-999));
    }
    return codes;
  }
  mp::Process& operator[](std::size_t i) { return members_[i]; }

private:
  std::vector<mp::Process> members_;
};

// Lines of /proc/self/maps that name a /dev/shm file: what a named shared segment would leave.
inline std::vector<std::string> dev_shm_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::vector<std::string> out;
  for (std::string line; std::getline(maps, line);)
    if (line.find("/dev/shm") != std::string::npos) out.push_back(line);
  return out;
}

// Pids of this process's direct children.
inline std::set<pid_t> child_pids() {
  std::set<pid_t> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "children");
    for (pid_t pid; in >> pid;) out.insert(pid);
  }
  return out;
}

// The server process a Manager made right after `before` was taken.
inline pid_t new_child(const std::set<pid_t>& before) {
  for (pid_t pid : child_pids())
    if (!before.count(pid)) return pid;
  FAIL("the manager started no server process");
  return -1;
}

}  // namespace multiproc_test
