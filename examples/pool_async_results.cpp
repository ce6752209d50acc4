// apply_async, map_async and starmap_async, read after close() and join() (seed 003, "Pool").
//
//   import multiprocessing
//
//   def f(a):            # map passes one argument
//       return a
//
//   def g(a, b):         # starmap unpacks each tuple into several
//       return a
//
//   if __name__ == "__main__":
//       pool = multiprocessing.Pool()
//       result = [pool.apply_async(f, (a,)) for a in [10, 20]]
//       pool.close()
//       pool.join()
//       for item in result:
//           print(item.get())
//
//       pool = multiprocessing.Pool()
//       result = pool.map_async(f, (30, 40)).get()
//       pool.close()
//       pool.join()
//       for item in result:
//           print(item)
//
//       pool = multiprocessing.Pool()
//       result = pool.starmap_async(g, ((50, 'b0'), (60, 'b1'))).get()
//       blocking = pool.starmap(g, ((50, 'b0'), (60, 'b1')))   # the same, blocking
//       pool.close()
//       pool.join()
//       for item in result:
//           print(item)
#include <iostream>
#include <string>
#include <tuple>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

int f(int a) { return a; }
int g(int a, const std::string& /*b*/) { return a; }

int main(int argc, char** argv) {
  mp::init(argc, argv);
  {
    mp::Pool pool;
    std::vector<mp::AsyncResult<int>> result;
    for (int a : {10, 20}) result.push_back(pool.apply_async(f, a));
    pool.close();
    pool.join();
    for (auto& item : result) std::cout << item.get() << std::endl;
    example::check(result[0].get() == 10 && result[1].get() == 20, "apply_async results outlive the pool's join()");
  }
  {
    mp::Pool pool;
    auto result = pool.map_async(f, std::vector<int>{30, 40}).get();
    pool.close();
    pool.join();
    for (int item : result) std::cout << item << std::endl;
    example::check(result == std::vector<int>{30, 40}, "map_async");
  }
  {
    mp::Pool pool;
    std::vector<std::tuple<int, std::string>> pairs{{50, "b0"}, {60, "b1"}};
    auto result = pool.starmap_async(g, pairs).get();
    auto blocking = pool.starmap(g, pairs);
    pool.close();
    pool.join();
    for (int item : result) std::cout << item << std::endl;
    example::check(result == std::vector<int>{50, 60} && blocking == result, "starmap_async and starmap");
  }
}
