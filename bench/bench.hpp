// What the benchmark programs share: the command line every program answers (`<measure> <n>`,
// one number on stdout, in the measure's unit), a clock, the CPU-bound task, and a reader for a
// process's private memory. bench/run owns the workload sizes and passes n to every side, so
// ours, CPython and the raw limit always do the same amount of work.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// One measure: runs its workload of size n and returns the result in the measure's unit.
struct Measure {
  std::string_view name;
  double (*run)(long n);
};

// Parses `<measure> <n>` from argv, runs that measure and prints its result. Exit code 2 for an
// unknown measure or a bad n, 1 when the measure threw (message on stderr).
int run_measure(int argc, char** argv, std::span<const Measure> measures);

// A CPU-bound task that the optimizer cannot fold: iters steps of xorshift64.
std::uint64_t burn(std::uint64_t iters);
// Steps of burn() per task in pool_cpu_scaling: about 10 ms of one core here.
inline constexpr std::uint64_t burn_iters_per_task = 6'000'000;

// Private_Clean + Private_Dirty of a process, in KiB, from /proc/PID/smaps_rollup.
long private_kib(pid_t pid);

// The other "hosts" of the measures across hosts (node_pool_map): bench/run starts the program
// in one network namespace and names the others in BENCH_HOSTS, "netns:ip,netns:ip"; without it,
// `count` hosts that are this one (loopback, no namespace).
struct Host {
  std::string netns;  // empty: stay in this process's namespace
  std::string ip;
};
std::vector<Host> other_hosts(std::size_t count);
// Moves the calling (single-threaded, freshly forked) process into host's network namespace.
void enter(const Host& host);

} // namespace bench
