// apply_async with a callback, then close() and join() (seed 001, "进程池").
//
//   from multiprocessing import Pool, freeze_support
//   import time
//
//   def Foo(i):
//       time.sleep(0.005)
//       return i + 100
//
//   def Bar(arg):
//       print('-->exec done:', arg)
//
//   if __name__ == '__main__':
//       freeze_support()
//       pool = Pool(5)
//       for i in range(10):
//           pool.apply_async(func=Foo, args=(i,), callback=Bar)
//       print('end')
//       pool.close()
//       pool.join()   # waits for the tasks and their callbacks; must follow close() or terminate()
#include <algorithm>
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

int Foo(int i) {
  std::this_thread::sleep_for(5ms);
  return i + 100;
}

std::vector<int> done;  // only Bar touches it, and callbacks run one at a time

void Bar(const int& arg) {
  std::cout << "-->exec done: " << arg << std::endl;
  done.push_back(arg);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::freeze_support();
  mp::Pool pool(5);
  for (int i = 0; i < 10; ++i) pool.apply_async(Foo, mp::args(i), Bar);
  std::cout << "end" << std::endl;
  pool.close();
  pool.join();

  std::sort(done.begin(), done.end());
  example::check(done == std::vector<int>{100, 101, 102, 103, 104, 105, 106, 107, 108, 109},
                 "Bar saw every result before join() returned");
}
