// close() then join() finishes every task; terminate() then join() abandons them (seed 000).
//
//   import multiprocessing, time
//
//   def pow3(x):
//       time.sleep(0.0001)
//       return x**3
//
//   if __name__ == '__main__':
//       print('Creating pool with %d processes\n' % 4)
//       pool = multiprocessing.Pool(4)
//
//       print('Testing close():')
//       results = [pool.apply_async(pow3, (i,)) for i in range(100)]
//       pool.close()
//       pool.join()
//       for i, r in enumerate(results):
//           assert r.get() == i**3        # the seed's `assert r.get() is None` is a typo
//       for worker in pool._pool:
//           assert not worker.is_alive()
//       print('\tclose() succeeded\n')
//
//       print('Testing terminate():')
//       pool = multiprocessing.Pool(2)
//       DELTA = 0.001
//       ignore = pool.apply(pow3, [2])
//       results = [pool.apply_async(time.sleep, [DELTA]) for i in range(100)]
//       pool.terminate()
//       pool.join()
//       for worker in pool._pool:
//           assert not worker.is_alive()
//       print('\tterminate() succeeded\n')
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

int pow3(int x) {
  std::this_thread::sleep_for(100us);
  return x * x * x;
}

void sleep_seconds(double seconds) { std::this_thread::sleep_for(std::chrono::duration<double>(seconds)); }

// Python's `assert not worker.is_alive()` for pool._pool: no process with these pids remains.
bool all_gone(const std::vector<pid_t>& pids) {
  for (pid_t pid : pids)
    if (::kill(pid, 0) == 0 || errno != ESRCH) return false;
  return true;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::cout << "Creating pool with 4 processes\n" << std::endl;
  {
    mp::Pool pool(4);
    std::cout << "Testing close():" << std::endl;
    std::vector<mp::AsyncResult<int>> results;
    for (int i = 0; i < 100; ++i) results.push_back(pool.apply_async(pow3, i));
    auto workers = pool.worker_pids();
    pool.close();
    pool.join();
    for (int i = 0; i < 100; ++i) example::check(results[i].get() == i * i * i, "every task finished before join()");
    example::check(all_gone(workers), "no worker is alive after join()");
    std::cout << "\tclose() succeeded\n" << std::endl;
  }
  {
    std::cout << "Testing terminate():" << std::endl;
    mp::Pool pool(2);
    const double delta = 0.001;
    int ignore = pool.apply(pow3, 2);
    example::check(ignore == 8, "apply() returns the result");
    std::vector<mp::AsyncResult<void>> results;
    for (int i = 0; i < 100; ++i) results.push_back(pool.apply_async(sleep_seconds, delta));
    auto workers = pool.worker_pids();
    pool.terminate();
    pool.join();
    example::check(all_gone(workers), "no worker is alive after terminate() and join()");
    std::cout << "\tterminate() succeeded\n" << std::endl;
  }
}
