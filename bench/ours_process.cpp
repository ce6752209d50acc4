// Process: starting and joining an empty child.
#include <multiproc/multiproc.hpp>

#include "ours.hpp"

namespace mp = multiproc;

namespace {

void nothing() {}

void start_join(mp::StartMethod method) {
  mp::Process p(mp::ProcessOptions{.start_method = method}, nothing);
  p.start();
  p.join();
}

// µs per Process(nothing).start() + join() under method. One start first, untimed: the fork
// server is spawned by the first use (CPython's side does the same).
double start_join_by(mp::StartMethod method, long n) {
  if (method == mp::StartMethod::forkserver) start_join(method);
  auto start = bench::Clock::now();
  for (long i = 0; i < n; ++i) start_join(method);
  return bench::seconds_since(start) / static_cast<double>(n) * 1e6;
}

double process_start_join(long n) { return start_join_by(mp::StartMethod::fork, n); }
double process_start_join_forkserver(long n) { return start_join_by(mp::StartMethod::forkserver, n); }
double process_start_join_spawn(long n) { return start_join_by(mp::StartMethod::spawn, n); }

constexpr bench::Measure measures[] = {
    {"process_start_join", process_start_join},
    {"process_start_join_forkserver", process_start_join_forkserver},
    {"process_start_join_spawn", process_start_join_spawn},
};

} // namespace

std::span<const bench::Measure> bench::process_measures() { return measures; }
