// Two processes compute, the parent collects their results from a Queue (seed 002, "#3-queue").
//
//   import multiprocessing as mp
//
//   def job(q):
//       res = 0
//       for i in range(1000):
//           res += i + i**2 + i**3
//       q.put(res)
//
//   if __name__ == '__main__':
//       q = mp.Queue()
//       p1 = mp.Process(target=job, args=(q,))
//       p2 = mp.Process(target=job, args=(q,))
//       p1.start()
//       p2.start()
//       p1.join()
//       p2.join()
//       res1 = q.get()
//       res2 = q.get()
//       print(res1 + res2)
#include <iostream>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void job(mp::Queue<long long> q) {
  long long res = 0;
  for (long long i = 0; i < 1000; ++i) res += i + i * i + i * i * i;
  q.put(res);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Queue<long long> q;
  mp::Process p1(job, q);
  mp::Process p2(job, q);
  p1.start();
  p2.start();
  p1.join();
  p2.join();
  long long res1 = q.get();
  long long res2 = q.get();
  std::cout << res1 + res2 << std::endl;
  example::check(res1 + res2 == 499667166000LL, "the sum Python prints");
}
