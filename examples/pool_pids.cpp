// Which worker runs which task, results one by one, and map (seed 004, "进程池").
//
//   from multiprocessing import Pool
//   from time import sleep
//   import os
//
//   def text(id):
//       print('Process %s is running as id(%d).' % (os.getpid(), id))
//       sleep(0.005)
//       return os.getpid()
//
//   def square(con):
//       sleep(0.002)
//       return con**2
//
//   if __name__ == '__main__':
//       pool = Pool(4)
//       pids = [pool.apply_async(text, args=(i,)) for i in (111, 222, 333)]
//       pool.close()
//       pool.join()
//
//       pool = Pool(2)
//       for i in range(1, 5):
//           result = pool.apply_async(square, args=(i,))
//           print(result.get())      # get() right away: one task at a time
//       print(pool.map(square, (1, 2, 3, 4)))   # all at once, results in order
//       pool.close()
//       pool.join()
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

pid_t text(int id) {
  std::cout << "Process " + std::to_string(::getpid()) + " is running as id(" + std::to_string(id) + ").\n" << std::flush;
  std::this_thread::sleep_for(5ms);
  return ::getpid();
}

int square(int con) {
  std::this_thread::sleep_for(2ms);
  return con * con;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  {
    mp::Pool pool(4);
    std::vector<mp::AsyncResult<pid_t>> pids;
    for (int i : {111, 222, 333}) pids.push_back(pool.apply_async(text, i));
    auto workers = pool.worker_pids();
    pool.close();
    pool.join();
    for (auto& pid : pids)
      example::check(std::find(workers.begin(), workers.end(), pid.get()) != workers.end(),
                     "every task ran in one of the pool's workers");
  }
  {
    mp::Pool pool(2);
    std::vector<int> one_by_one;
    for (int i = 1; i < 5; ++i) {
      auto result = pool.apply_async(square, i);
      one_by_one.push_back(result.get());
      std::cout << one_by_one.back() << std::endl;
    }
    auto all = pool.map(square, std::vector<int>{1, 2, 3, 4});
    std::cout << mp::Object(all) << std::endl;
    pool.close();
    pool.join();
    example::check(one_by_one == std::vector<int>{1, 4, 9, 16} && all == one_by_one, "the squares, in order");
  }
}
