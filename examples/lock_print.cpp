// Ten processes take turns printing under a Lock (seeds 001 and 003).
//
//   from multiprocessing import Process, Lock
//
//   def f(l, i):
//       l.acquire()
//       try:
//           print('hello world', i)
//       finally:
//           l.release()
//
//   if __name__ == '__main__':
//       lock = Lock()
//       for num in range(10):
//           Process(target=f, args=(lock, num)).start()
//       # leaving main joins the children, as Python does at exit
#include <iostream>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

void f(mp::Lock l, int i) {
  l.acquire();
  std::cout << "hello world " << i << std::endl;  // cannot throw: release below always runs
  l.release();
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Lock lock;
  for (int num = 0; num < 10; ++num) mp::Process(f, lock, num).start();
}
