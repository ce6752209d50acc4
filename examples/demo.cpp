// The main demo: a CPU-bound job run by a plain loop, by threads and by processes (seed 002,
// "#4-comparison"), with live progress while the pool works.
//
//   import multiprocessing as mp
//   import threading as td
//   import time
//
//   def job(q):
//       res = 0
//       for i in range(1000000):
//           res += i + i**2 + i**3
//       q.put(res)
//
//   def multicore():     # two processes, results through a Queue
//   def normal():        # the same work twice in a loop
//   def multithread():   # two threads; under the GIL no faster than the loop
//
//   if __name__ == '__main__':
//       st = time.time(); normal(); st1 = time.time(); print('normal time:', st1 - st)
//       multithread(); st2 = time.time(); print('multithread time:', st2 - st1)
//       multicore(); print('multicore time:', time.time() - st2)
//
// Here the job counts the primes below --size by trial division, split into chunks. C++ threads
// are not held back by a GIL, so threads and processes both scale; processes add isolation (a
// crashing task costs only its worker) and are what scales on to other hosts.
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "primes.hpp"

namespace mp = multiproc;
using Clock = std::chrono::steady_clock;
using example::Range;
using example::split;

std::uint64_t count_primes(Range range) { return example::primes_in(range); }

std::uint64_t serial(const std::vector<Range>& ranges) {
  std::uint64_t total = 0;
  for (auto& r : ranges) total += count_primes(r);
  return total;
}

std::uint64_t with_threads(const std::vector<Range>& ranges, unsigned n) {
  std::atomic<std::size_t> next{0};
  std::atomic<std::uint64_t> total{0};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < n; ++t)
    threads.emplace_back([&] {
      for (std::size_t i; (i = next++) < ranges.size();) total += count_primes(ranges[i]);
    });
  for (auto& t : threads) t.join();
  return total;
}

// Progress of the pool run: a redrawn bar on a terminal, a line per tenth otherwise.
class Progress {
public:
  explicit Progress(std::size_t total) : total_(total), tty_(::isatty(STDOUT_FILENO)) {}
  void advance() {
    ++done_;
    if (tty_) {
      int width = 40, filled = static_cast<int>(width * done_ / total_);
      std::printf("\r  pool   [%s%s] %3zu%%", std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                  100 * done_ / total_);
      if (done_ == total_) std::printf("\r%*s\r", width + 20, "");
      std::fflush(stdout);
    } else if (10 * done_ / total_ != 10 * (done_ - 1) / total_) {
      std::printf("  pool: %3zu%% (%zu/%zu chunks)\n", 100 * done_ / total_, done_, total_);
      std::fflush(stdout);
    }
  }

private:
  std::size_t total_, done_ = 0;
  bool tty_;
};

std::uint64_t with_pool(const std::vector<Range>& ranges, unsigned n) {
  mp::Pool pool(n);
  Progress progress(ranges.size());
  std::uint64_t total = 0;
  for (std::uint64_t count : pool.imap_unordered(count_primes, ranges)) {
    total += count;
    progress.advance();
  }
  pool.close();
  pool.join();
  return total;
}

struct Timed {
  std::uint64_t primes;
  double seconds;
};

template <class F>
Timed timed(F run) {
  auto start = Clock::now();
  std::uint64_t primes = run();
  return {primes, std::chrono::duration<double>(Clock::now() - start).count()};
}

void report(const std::string& label, const Timed& t, const Timed& baseline) {
  std::printf("  %-24s %8.3f s   %llu primes   %5.2fx\n", label.c_str(), t.seconds,
              static_cast<unsigned long long>(t.primes), baseline.seconds / t.seconds);
  std::fflush(stdout);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::uint64_t size = 20'000'000;
  unsigned processes = mp::cpu_count();
  std::size_t chunks = 200;
  bool verbose = false;
  CLI::App app{"Counts the primes below --size with a plain loop, with threads and with a process pool."};
  app.add_option("--size", size, "count the primes below this number")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--processes", processes, "threads and pool processes (default: cpu_count())")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1024u));
  app.add_option("--chunks", chunks, "pieces the range is split into")->capture_default_str()->check(CLI::Range(1ul, 1'000'000ul));
  app.add_flag("--verbose,-v", verbose, "log the library's process and pool events to stderr");
  CLI11_PARSE(app, argc, argv);
  if (verbose) mp::log_to_stderr(mp::LogLevel::info);

  auto ranges = split(size, chunks);
  std::printf("Counting the primes below %llu in %zu chunks, %u-way parallel (cpu_count() = %u)\n",
              static_cast<unsigned long long>(size), ranges.size(), processes, mp::cpu_count());
  std::fflush(stdout);
  auto loop = timed([&] { return serial(ranges); });
  report("plain loop", loop, loop);
  auto threads = timed([&] { return with_threads(ranges, processes); });
  report(std::to_string(processes) + " std::threads", threads, loop);
  auto pool = timed([&] { return with_pool(ranges, processes); });
  report("Pool(" + std::to_string(processes) + ") processes", pool, loop);

  if (threads.primes != loop.primes || pool.primes != loop.primes) {
    std::fprintf(stderr, "check failed: the three runs disagree\n");
    return 1;
  }
  return 0;
}
