// The main demo's job, shared by demo.cpp and distributed_primes.cpp: the primes in a range, by
// trial division (CPU-bound on purpose), and the range split into chunks for workers.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace example {

using Range = std::pair<std::uint64_t, std::uint64_t>;  // [first, last)

inline bool is_prime(std::uint64_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (std::uint64_t d = 3; d * d <= n; d += 2)
    if (n % d == 0) return false;
  return true;
}

inline std::uint64_t primes_in(Range range) {
  std::uint64_t count = 0;
  for (auto n = range.first; n < range.second; ++n) count += is_prime(n);
  return count;
}

inline std::vector<Range> split(std::uint64_t size, std::size_t chunks) {
  std::vector<Range> ranges;
  for (std::size_t i = 0; i < chunks; ++i) ranges.emplace_back(size * i / chunks, size * (i + 1) / chunks);
  return ranges;
}

} // namespace example
