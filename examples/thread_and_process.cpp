// A thread and a process run the same function the same way (seed 002, "添加进程 Process").
//
//   import multiprocessing as mp
//   import threading as td
//
//   def job(a, d):
//       print('aaaaa')
//
//   if __name__ == '__main__':
//       t1 = td.Thread(target=job, args=(1, 2))
//       p1 = mp.Process(target=job, args=(1, 2))
//       t1.start()
//       p1.start()
//       t1.join()
//       p1.join()
#include <iostream>
#include <thread>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void job(int a, int d) { std::cout << "aaaaa " << a << ' ' << d << std::endl; }

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::thread t1(job, 1, 2);
  mp::Process p1(job, 1, 2);
  t1.join();  // join the thread before forking: fork copies only the calling thread
  p1.start();
  p1.join();
  example::check(p1.exitcode() == 0, "the process ran job to the end");
}
