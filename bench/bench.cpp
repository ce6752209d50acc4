#include "bench.hpp"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace bench {

int run_measure(int argc, char** argv, std::span<const Measure> measures) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <measure> <n>\n", argv[0]);
    return 2;
  }
  std::string_view name = argv[1];
  char* end = nullptr;
  long n = std::strtol(argv[2], &end, 10);
  if (*end != '\0' || n <= 0) {
    std::fprintf(stderr, "%s: n must be a positive integer, got '%s'\n", argv[0], argv[2]);
    return 2;
  }
  for (const auto& m : measures) {
    if (m.name != name) continue;
    try {
      double result = m.run(n);
      std::printf("%.6g\n", result);
      std::fflush(stdout);
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s %s: %s\n", argv[0], argv[1], e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "%s: no measure named '%s'\n", argv[0], argv[1]);
  return 2;
}

std::uint64_t burn(std::uint64_t iters) {
  std::uint64_t x = 88172645463325252ull;
  for (std::uint64_t i = 0; i < iters; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

long private_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  if (!in) throw std::runtime_error("cannot read /proc/" + std::to_string(pid) + "/smaps_rollup");
  long total = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    long kib = 0;
    fields >> key >> kib;
    if (key == "Private_Clean:" || key == "Private_Dirty:") total += kib;
  }
  return total;
}

std::vector<Host> other_hosts(std::size_t count) {
  const char* spec = std::getenv("BENCH_HOSTS");
  if (!spec || !*spec) return std::vector<Host>(count, Host{"", "127.0.0.1"});
  std::vector<Host> hosts;
  std::istringstream items(spec);
  for (std::string item; std::getline(items, item, ',');) {
    auto colon = item.find(':');
    if (colon == std::string::npos) throw std::runtime_error("BENCH_HOSTS: want netns:ip, got '" + item + "'");
    hosts.push_back({item.substr(0, colon), item.substr(colon + 1)});
  }
  if (hosts.size() < count) throw std::runtime_error("BENCH_HOSTS names fewer hosts than the measure needs");
  hosts.resize(count);
  return hosts;
}

void enter(const Host& host) {
  if (host.netns.empty()) return;
  int fd = ::open(("/run/netns/" + host.netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) throw std::runtime_error("cannot enter network namespace " + host.netns);
  ::close(fd);
}

} // namespace bench
