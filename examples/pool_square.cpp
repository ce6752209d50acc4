// map and apply_async on a Pool of two (seed 002, "#5-pool").
//
//   import multiprocessing as mp
//
//   def job(x):
//       return x * x
//
//   def multicore():
//       pool = mp.Pool(processes=2)
//       res = pool.map(job, range(10))
//       print(res)
//       res = pool.apply_async(job, (2,))
//       print(res.get())
//       multi_res = [pool.apply_async(job, (i,)) for i in range(10)]
//       print([res.get() for res in multi_res])
//
//   if __name__ == '__main__':
//       multicore()
#include <iostream>
#include <numeric>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

int job(int x) { return x * x; }

void multicore() {
  mp::Pool pool(2);
  std::vector<int> range10(10);
  std::iota(range10.begin(), range10.end(), 0);
  const std::vector<int> squares{0, 1, 4, 9, 16, 25, 36, 49, 64, 81};

  std::vector<int> res = pool.map(job, range10);
  std::cout << mp::Object(res) << std::endl;
  example::check(res == squares, "map");

  auto one = pool.apply_async(job, 2);
  std::cout << one.get() << std::endl;
  example::check(one.get() == 4, "apply_async");

  std::vector<mp::AsyncResult<int>> multi_res;
  for (int i : range10) multi_res.push_back(pool.apply_async(job, i));
  std::vector<int> gathered;
  for (auto& r : multi_res) gathered.push_back(r.get());
  std::cout << mp::Object(gathered) << std::endl;
  example::check(gathered == squares, "apply_async, gathered in order");
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  multicore();
}
