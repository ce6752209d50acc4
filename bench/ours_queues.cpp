// Queue: small integers from producer processes to consumer processes.
#include <multiproc/multiproc.hpp>

#include <vector>

#include "ours.hpp"

namespace mp = multiproc;

namespace {

using bench::Clock;
using bench::seconds_since;

constexpr long sentinel = -1;

void produce(mp::Queue<long> q, long count) {
  for (long i = 0; i < count; ++i) q.put(i);
  q.put(sentinel);
}

void consume(mp::Queue<long> q) {
  while (q.get() != sentinel) {
  }
}

// Items/s from one producer process to this process.
double queue_1to1(long n) {
  mp::Queue<long> q;
  auto start = Clock::now();
  mp::Process producer(produce, q, n);
  producer.start();
  consume(q);
  double elapsed = seconds_since(start);
  producer.join();
  return static_cast<double>(n) / elapsed;
}

// Items/s from two producer processes to two consumer processes, n items in all.
double queue_2to2(long n) {
  mp::Queue<long> q;
  auto start = Clock::now();
  std::vector<mp::Process> procs;
  for (int i = 0; i < 2; ++i) procs.emplace_back(produce, q, n / 2);
  for (int i = 0; i < 2; ++i) procs.emplace_back(consume, q);
  for (auto& p : procs) p.start();
  for (auto& p : procs) p.join();
  return static_cast<double>(n) / seconds_since(start);
}

constexpr bench::Measure measures[] = {
    {"queue_1to1", queue_1to1},
    {"queue_2to2", queue_2to2},
};

} // namespace

std::span<const bench::Measure> bench::queue_measures() { return measures; }
