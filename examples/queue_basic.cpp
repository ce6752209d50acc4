// A Queue between parent and child (seed 001).
//
//   from multiprocessing import Process, Queue
//
//   def f(q):
//       q.put([42, None, 'hello'])
//
//   if __name__ == '__main__':
//       q = Queue()
//       p = Process(target=f, args=(q,))
//       p.start()
//       print(q.get())    # prints "[42, None, 'hello']"
//       p.join()
#include <iostream>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void f(mp::Queue<mp::Object> q) { q.put(mp::Object::Array{42, mp::Object(), "hello"}); }

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Queue<mp::Object> q;
  mp::Process p(f, q);
  p.start();
  mp::Object item = q.get();
  std::cout << item << std::endl;
  p.join();
  example::check(item.repr() == "[42, None, 'hello']", "the list arrived whole");
}
