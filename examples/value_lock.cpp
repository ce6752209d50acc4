// Two processes add to one shared Value, taking turns under a Lock (seed 002, "#7-lock").
//
//   import multiprocessing as mp
//   import time
//
//   def job(v, num, l):
//       l.acquire()
//       for _ in range(10):
//           time.sleep(0.001)
//           v.value += num
//           print(v.value)
//       l.release()
//
//   if __name__ == '__main__':
//       l = mp.Lock()
//       v = mp.Value('i', 0)
//       p1 = mp.Process(target=job, args=(v, 1, l))
//       p2 = mp.Process(target=job, args=(v, 3, l))
//       p1.start()
//       p2.start()
//       p1.join()
//       p2.join()
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

void job(mp::Value<int> v, int num, mp::Lock l) {
  std::lock_guard guard(l);
  for (int n = 0; n < 10; ++n) {
    std::this_thread::sleep_for(1ms);
    v.value() += num;
    std::cout << v.value() << std::endl;
  }
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Lock l;
  mp::Value<int> v(0);
  mp::Process p1(job, v, 1, l);
  mp::Process p2(job, v, 3, l);
  p1.start();
  p2.start();
  p1.join();
  p2.join();
  example::check(v.value() == 40, "ten times 1 plus ten times 3, none lost");
}
