// A shared Value and Array changed by ten processes (seed 000, "共享内存").
//
//   from multiprocessing import Process, Value, Array
//
//   def f(n, a):
//       n.value += 1
//       print('arr pre', a[:])
//       for i in range(len(a)):
//           a[i] = -a[i]
//       print('arr post', a[:])
//
//   if __name__ == '__main__':
//       num = Value('d', 0.0)
//       arr = Array('i', range(10))
//       ps = [Process(target=f, args=(num, arr)) for i in range(10)]
//       for p in ps:
//           p.start()
//           p.join()      # one at a time: `n.value += 1` is not atomic
//       print(num.value)
//       print(arr[:])
#include <iostream>
#include <numeric>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void f(mp::Value<double> n, mp::Array<int> a) {
  n.value() += 1;
  std::cout << "arr pre " << mp::Object(a.to_vector()) << std::endl;
  for (auto& x : a) x = -x;
  std::cout << "arr post " << mp::Object(a.to_vector()) << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Value<double> num(0.0);
  std::vector<int> range10(10);
  std::iota(range10.begin(), range10.end(), 0);
  mp::Array<int> arr(range10);
  for (int i = 0; i < 10; ++i) {
    mp::Process p(f, num, arr);
    p.start();
    p.join();
  }
  std::cout << num.value() << std::endl;
  std::cout << mp::Object(arr.to_vector()) << std::endl;
  example::check(num.value() == 10.0, "ten increments");
  example::check(arr.to_vector() == range10, "negated ten times: back to 0..9");
}
