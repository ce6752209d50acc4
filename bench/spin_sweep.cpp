// Which spin-before-block length pays off for a small-message round trip between two processes?
// For each spin length, both ends of a Pipe spin that long before they block; we time many
// ping-pong round trips and print the median, the 90th percentile and the CPU time per trip.
// Usage: spin_sweep [pin]. Not part of the CMake build; compile by hand against the library:
//   g++ -std=c++20 -O2 -DMSGPACK_NO_BOOST -Iframework/include bench/spin_sweep.cpp
//       -Lbuild/framework -lmultiproc -Wl,-rpath,$PWD/build/framework -o /tmp/spin_sweep
#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string_view>
#include <vector>

#include "multiproc/multiproc.hpp"

namespace mp = multiproc;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int warmup = 500;
constexpr int trips = 5000;

// With "pin", the parent runs on CPU 0 and the echoing child on CPU 1: the case of an idle
// machine. Without it the scheduler places them, and other load may share their CPUs.
bool g_pin = false;

void pin_to(int cpu) {
  if (!g_pin) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::sched_setaffinity(0, sizeof set, &set);
}

void echo(mp::Connection conn) {
  pin_to(1);
  for (;;) {
    int v = conn.recv<int>();
    if (v < 0) return;
    conn.send(v);
  }
}

double cpu_seconds(int who) {
  rusage ru{};
  ::getrusage(who, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

void measure(long spin_us) {
  mp::detail::set_spin_duration(std::chrono::microseconds(spin_us));  // the child inherits it
  auto [a, b] = mp::Pipe();
  mp::Process child(echo, b);
  child.start();
  b.close();
  for (int i = 0; i < warmup; ++i) {
    a.send(i);
    a.recv<int>();
  }
  std::vector<double> rtt;
  rtt.reserve(trips);
  double cpu0 = cpu_seconds(RUSAGE_SELF);
  for (int i = 0; i < trips; ++i) {
    auto t0 = Clock::now();
    a.send(i);
    a.recv<int>();
    rtt.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  double cpu = cpu_seconds(RUSAGE_SELF) - cpu0;
  a.send(-1);
  child.join();
  std::sort(rtt.begin(), rtt.end());
  std::printf("spin %4ld us: median %7.1f us  p90 %7.1f us  parent cpu %5.1f us/trip\n", spin_us,
              rtt[rtt.size() / 2], rtt[rtt.size() * 9 / 10], cpu / trips * 1e6);
}

} // namespace

int main(int argc, char** argv) {
  g_pin = argc > 1 && std::string_view(argv[1]) == "pin";
  pin_to(0);
  for (long spin : {0L, 5L, 10L, 20L, 50L, 100L, 200L}) measure(spin);
}
