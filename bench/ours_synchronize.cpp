// Lock and Value: an uncontended lock, and a shared counter incremented under its lock.
#include <multiproc/multiproc.hpp>

#include <mutex>
#include <vector>

#include "ours.hpp"

namespace mp = multiproc;

namespace {

using bench::Clock;
using bench::seconds_since;

// ns per acquire() + release() of an uncontended Lock.
double lock_uncontended(long n) {
  mp::Lock lock;
  auto start = Clock::now();
  for (long i = 0; i < n; ++i) {
    lock.acquire();
    lock.release();
  }
  return seconds_since(start) / static_cast<double>(n) * 1e9;
}

void locked_increments(mp::Value<long> value, long n) {
  for (long i = 0; i < n; ++i) {
    std::lock_guard guard(value.get_lock());
    ++value.value();
  }
}

// Increments/s when two processes each add n to a Value under its lock.
double value_locked_increment_2proc(long n) {
  mp::Value<long> value(0);
  auto start = Clock::now();
  std::vector<mp::Process> procs;
  for (int i = 0; i < 2; ++i) procs.emplace_back(locked_increments, value, n);
  for (auto& p : procs) p.start();
  for (auto& p : procs) p.join();
  double elapsed = seconds_since(start);
  if (value.value() != 2 * n) throw mp::Error("lost increments");
  return 2.0 * static_cast<double>(n) / elapsed;
}

constexpr bench::Measure measures[] = {
    {"lock_uncontended", lock_uncontended},
    {"value_locked_increment_2proc", value_locked_increment_2proc},
};

} // namespace

std::span<const bench::Measure> bench::synchronize_measures() { return measures; }
