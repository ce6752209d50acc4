// Process: starting and joining an empty child.
#include <multiproc/multiproc.hpp>

#include "ours.hpp"

namespace mp = multiproc;

namespace {

void nothing() {}

// µs per Process(nothing).start() + join().
double process_start_join(long n) {
  auto start = bench::Clock::now();
  for (long i = 0; i < n; ++i) {
    mp::Process p(nothing);
    p.start();
    p.join();
  }
  return bench::seconds_since(start) / static_cast<double>(n) * 1e6;
}

constexpr bench::Measure measures[] = {
    {"process_start_join", process_start_join},
};

} // namespace

std::span<const bench::Measure> bench::process_measures() { return measures; }
