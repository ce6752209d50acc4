// Pool: map throughput, apply_async round trips, CPU-bound scaling and a worker's memory.
#include <multiproc/multiproc.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "ours.hpp"

namespace mp = multiproc;

namespace {

using bench::Clock;
using bench::seconds_since;

constexpr long warmup_tasks = 100;
// A map of 100k trivial tasks takes a few ms: time several, so one time slice lost to another
// process does not decide the result.
constexpr int trivial_map_rounds = 5;

long square(long x) { return x * x; }

std::vector<long> first_integers(long n) {
  std::vector<long> xs(static_cast<std::size_t>(n));
  std::iota(xs.begin(), xs.end(), 0L);
  return xs;
}

// Tasks/s of `rounds` pool.map(square, 0..n-1, chunksize) on a warmed-up Pool().
double timed_map(long n, std::size_t chunksize, int rounds) {
  mp::Pool pool;
  pool.map(square, first_integers(warmup_tasks));
  auto xs = first_integers(n);
  auto start = Clock::now();
  for (int i = 0; i < rounds; ++i) {
    auto squares = pool.map(square, xs, chunksize);
    if (squares.back() != square(n - 1)) throw mp::Error("map returned wrong results");
  }
  return static_cast<double>(n) * rounds / seconds_since(start);
}

double pool_map_trivial(long n) { return timed_map(n, 0, trivial_map_rounds); }
double pool_map_chunksize1(long n) { return timed_map(n, 1, 1); }

// µs per pool.apply_async(square, i).get(), one task in flight.
double pool_apply_async_roundtrip(long n) {
  mp::Pool pool;
  for (long i = 0; i < warmup_tasks; ++i) pool.apply_async(square, i).get();
  auto start = Clock::now();
  for (long i = 0; i < n; ++i) pool.apply_async(square, i).get();
  return seconds_since(start) / static_cast<double>(n) * 1e6;
}

std::uint64_t burn_task(std::uint64_t iters) { return bench::burn(iters); }

// Parallel efficiency of Pool(cpu_count()).map over n CPU-bound tasks against a serial loop.
double pool_cpu_scaling(long n) {
  std::vector<std::uint64_t> tasks(static_cast<std::size_t>(n), bench::burn_iters_per_task);
  auto start = Clock::now();
  std::vector<std::uint64_t> expected;
  for (auto t : tasks) expected.push_back(burn_task(t));
  double serial = seconds_since(start);
  unsigned cores = mp::cpu_count();
  mp::Pool pool(cores);
  pool.map(square, first_integers(cores));
  start = Clock::now();
  auto got = pool.map(burn_task, tasks);
  double parallel = seconds_since(start);
  if (got != expected) throw mp::Error("parallel results differ");
  return serial / (cores * parallel);
}

// KiB of private memory of the largest Pool(2) worker after a map of n trivial tasks.
double worker_rss_kib(long n) {
  mp::Pool pool(2);
  pool.map(square, first_integers(n));
  long largest = 0;
  for (pid_t pid : pool.worker_pids()) largest = std::max(largest, bench::private_kib(pid));
  return static_cast<double>(largest);
}

constexpr bench::Measure measures[] = {
    {"pool_map_trivial", pool_map_trivial},
    {"pool_map_chunksize1", pool_map_chunksize1},
    {"pool_apply_async_roundtrip", pool_apply_async_roundtrip},
    {"pool_cpu_scaling", pool_cpu_scaling},
    {"worker_rss_kib", worker_rss_kib},
};

} // namespace

std::span<const bench::Measure> bench::pool_measures() { return measures; }
