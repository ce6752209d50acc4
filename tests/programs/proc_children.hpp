// What /proc says about a process's children: the tests' independent witness for "no zombies"
// and "no child left behind". Shared by test_process.cpp and the helper programs it runs.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace multiproc_test {

struct ChildEntry {
  pid_t pid;
  char state;  // 'Z' for a zombie
};

// Every process whose parent is `parent`, from /proc/<pid>/stat ("pid (comm) state ppid ...";
// comm may hold spaces and parentheses, so fields are read after the last ')').
inline std::vector<ChildEntry> children_of(pid_t parent) {
  std::vector<ChildEntry> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    pid_t pid = 0;
    if (std::from_chars(name.data(), name.data() + name.size(), pid).ec != std::errc{}) continue;
    std::ifstream in(entry.path() / "stat");
    std::string line;
    if (!std::getline(in, line)) continue;  // the process ended meanwhile
    auto close = line.rfind(')');
    if (close == std::string::npos || close + 4 > line.size()) continue;
    char state = line[close + 2];
    pid_t ppid = 0;
    const char* first = line.data() + close + 4;
    std::from_chars(first, line.data() + line.size(), ppid);
    if (ppid == parent) out.push_back({pid, state});
  }
  return out;
}

inline std::vector<pid_t> zombie_children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& c : children_of(parent))
    if (c.state == 'Z') out.push_back(c.pid);
  return out;
}

} // namespace multiproc_test
