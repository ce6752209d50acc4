// Callbacks of apply_async and map_async fill a list in the parent (seed 000, "回调函数的使用").
//
//   import multiprocessing, time
//
//   def mul(a, b):
//       time.sleep(0.002 * random.random())
//       return a * b
//
//   def pow3(x):
//       return x**3
//
//   if __name__ == '__main__':
//       pool = multiprocessing.Pool(4)
//       A = []
//       B = [56, 0, 1, 8, 27, 64, 125, 216, 343, 512, 729]
//
//       r = pool.apply_async(mul, (7, 8), callback=A.append)
//       r.wait()
//       print('try1:', A)
//       r = pool.map_async(pow3, range(10), callback=A.extend)
//       r.wait()
//       print('map_async result', r.get())
//       print('try2:', A)
//
//       print('no wait =========')
//       A = []
//       r1 = pool.apply_async(mul, (7, 8), callback=A.append)
//       print('try1:', A)           # probably still empty: the callbacks run later
//       r2 = pool.map_async(pow3, range(10), callback=A.extend)
//       print('try2:', A)
//       for i in range(5):
//           print(A)
//           time.sleep(0.002)
//       r2.wait()                  # the seed sleeps 5 s instead
//       print(sorted(A) == sorted(B))
#include <algorithm>
#include <chrono>
#include <iostream>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "calculate.hpp"
#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

int pow3(int x) { return x * x * x; }

// Python's list A. Callbacks run on the pool's result thread while main() reads A, so A
// needs a mutex here (Python's GIL hides that).
class SharedList {
public:
  void append(int x) {
    std::lock_guard lock(m_);
    items_.push_back(x);
  }
  void extend(const std::vector<int>& xs) {
    std::lock_guard lock(m_);
    items_.insert(items_.end(), xs.begin(), xs.end());
  }
  std::vector<int> snapshot() const {
    std::lock_guard lock(m_);
    return items_;
  }

private:
  mutable std::mutex m_;
  std::vector<int> items_;
};

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Pool pool(4);
  const std::vector<int> B{56, 0, 1, 8, 27, 64, 125, 216, 343, 512, 729};
  std::vector<int> range10(10);
  std::iota(range10.begin(), range10.end(), 0);

  SharedList A;
  auto r = pool.apply_async(example::mul, mp::args(7, 8), [&](int x) { A.append(x); });
  r.wait();
  std::cout << "try1: " << mp::Object(A.snapshot()) << std::endl;
  auto rm = pool.map_async(pow3, range10, 0, [&](const std::vector<int>& xs) { A.extend(xs); });
  rm.wait();
  std::cout << "map_async result " << mp::Object(rm.get()) << std::endl;
  std::cout << "try2: " << mp::Object(A.snapshot()) << std::endl;
  example::check(A.snapshot() == B, "with wait(): the callbacks ran in order");

  std::cout << "no wait =========" << std::endl;
  SharedList A2;
  auto r1 = pool.apply_async(example::mul, mp::args(7, 8), [&](int x) { A2.append(x); });
  std::cout << "try1: " << mp::Object(A2.snapshot()) << std::endl;
  auto r2 = pool.map_async(pow3, range10, 0, [&](const std::vector<int>& xs) { A2.extend(xs); });
  std::cout << "try2: " << mp::Object(A2.snapshot()) << std::endl;
  for (int i = 0; i < 5; ++i) {
    std::cout << mp::Object(A2.snapshot()) << std::endl;
    std::this_thread::sleep_for(2ms);
  }
  r1.wait();
  r2.wait();
  auto got = A2.snapshot();
  std::cout << mp::Object(got) << std::endl;
  std::sort(got.begin(), got.end());
  auto expected = B;
  std::sort(expected.begin(), expected.end());
  example::check(got == expected, "without wait(): every callback still ran, in some order");
}
