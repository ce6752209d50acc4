// A Manager's dict and list, changed by ten processes (seed 001, "Managers").
//
//   from multiprocessing import Process, Manager
//
//   def f(d, l):
//       d[1] = '1'
//       d['2'] = 2
//       d[0.25] = None
//       l.append(1)
//       print(l)
//
//   if __name__ == '__main__':
//       with Manager() as manager:
//           d = manager.dict()
//           l = manager.list(range(5))
//           p_list = []
//           for i in range(10):
//               p = Process(target=f, args=(d, l))
//               p.start()
//               p_list.append(p)
//           for res in p_list:
//               res.join()
//           print(d)
//           print(l)
#include <iostream>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

// Python's dict takes keys and values of any type: mp::Object is that "any".
using AnyDict = mp::DictProxy<mp::Object, mp::Object>;

void f(AnyDict d, mp::ListProxy<int> l) {
  d[1] = "1";
  d["2"] = 2;
  d[0.25] = mp::Object();  // None
  l.append(1);
  std::cout << mp::Object(l.copy()) << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Manager manager;  // `with Manager() as manager:` — the destructor shuts the server down
  auto d = manager.dict<mp::Object, mp::Object>();
  auto l = manager.list<int>();
  l.extend({0, 1, 2, 3, 4});
  std::vector<mp::Process> p_list;
  for (int i = 0; i < 10; ++i) {
    p_list.emplace_back(f, d, l);
    p_list.back().start();
  }
  for (auto& res : p_list) res.join();

  auto items = d.items();
  mp::Object dict = mp::Object::Map(items.begin(), items.end());
  std::cout << dict << std::endl;
  std::cout << mp::Object(l.copy()) << std::endl;
  example::check(d.size() == 3 && d.at(1) == mp::Object("1") && d.at("2") == mp::Object(2) && d.at(0.25).is_nil(),
                 "the dict holds what every child wrote");
  example::check(l.copy() == std::vector<int>{0, 1, 2, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, "ten appends after range(5)");
}
