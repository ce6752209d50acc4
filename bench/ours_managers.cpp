// Manager: dict operations from a child process on a Manager().dict().
#include <multiproc/multiproc.hpp>

#include "ours.hpp"

namespace mp = multiproc;

namespace {

void dict_ops(mp::DictProxy<long, long> d, long n, mp::Connection result) {
  auto start = bench::Clock::now();
  for (long i = 0; i < n / 2; ++i) {
    d.set(i % 64, i);
    d.at(i % 64);
  }
  result.send(bench::seconds_since(start));
}

// µs per set or get from a child process.
double manager_dict_op(long n) {
  mp::Manager manager;
  auto d = manager.dict<long, long>();
  auto [parent, child] = mp::Pipe();
  mp::Process worker(dict_ops, d, n, child);
  worker.start();
  double elapsed = parent.recv<double>();
  worker.join();
  return elapsed / static_cast<double>(n / 2 * 2) * 1e6;
}

constexpr bench::Measure measures[] = {
    {"manager_dict_op", manager_dict_op},
};

} // namespace

std::span<const bench::Measure> bench::manager_measures() { return measures; }
