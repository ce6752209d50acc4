// bench_ours: the library side of every measure (see ours.hpp); `bench_ours <measure> <n>`.
#include <multiproc/multiproc.hpp>

#include <vector>

#include "ours.hpp"

namespace mp = multiproc;

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::vector<bench::Measure> all;
  for (auto part : {bench::connection_measures(), bench::process_measures(), bench::queue_measures(),
                    bench::synchronize_measures(), bench::pool_measures(), bench::manager_measures(),
                    bench::actor_measures(), bench::node_measures()})
    all.insert(all.end(), part.begin(), part.end());
  return bench::run_measure(argc, argv, all);
}
