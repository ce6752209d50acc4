// The library's side of the benchmark, one file per part of the library (ours_<part>.cpp); each
// lists its measures here and bench/ours.cpp serves them all under bench/bench.hpp's protocol.
#pragma once

#include <span>

#include "bench.hpp"

namespace bench {

std::span<const Measure> connection_measures();
std::span<const Measure> process_measures();
std::span<const Measure> queue_measures();
std::span<const Measure> synchronize_measures();
std::span<const Measure> pool_measures();
std::span<const Measure> manager_measures();
std::span<const Measure> actor_measures();
std::span<const Measure> node_measures();

} // namespace bench
