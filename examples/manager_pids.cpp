// Three processes record their pids in a Manager's dict and list (seed 003, "Manager").
//
//   from multiprocessing import Process, Manager
//   import os
//
//   def f(d, l):
//       d[1] = 'Python'
//       d[2] = "Java"
//       d[3] = str(os.getpid())
//       l.append(os.getpid())
//       print(l)
//
//   if __name__ == '__main__':
//       with Manager() as manager:
//           d = manager.dict()
//           l = manager.list()
//           p_list = []
//           for i in range(3):
//               p = Process(target=f, args=(d, l))
//               p.start()
//               p_list.append(p)
//           for res in p_list:
//               res.join()
//           print(d)
//
//   # [14168]
//   # [14168, 14108]
//   # [14168, 14108, 5412]
//   # {1: 'Python', 2: 'Java', 3: '5412'}
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void f(mp::DictProxy<int, std::string> d, mp::ListProxy<int> l) {
  d[1] = "Python";
  d[2] = "Java";
  d[3] = std::to_string(::getpid());
  l.append(::getpid());
  std::cout << mp::Object(l.copy()) << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Manager manager;
  auto d = manager.dict<int, std::string>();
  auto l = manager.list<int>();
  std::vector<mp::Process> p_list;
  for (int i = 0; i < 3; ++i) {
    p_list.emplace_back(f, d, l);
    p_list.back().start();
  }
  std::vector<int> pids;
  for (auto& res : p_list) {
    res.join();
    pids.push_back(*res.pid());
  }
  std::cout << mp::Object(d.copy()) << std::endl;

  auto appended = l.copy();
  std::sort(appended.begin(), appended.end());
  std::sort(pids.begin(), pids.end());
  example::check(appended == pids, "each child appended its own pid once");
  example::check(d.at(1) == "Python" && d.at(2) == "Java", "the fixed entries");
  example::check(std::binary_search(pids.begin(), pids.end(), std::stoi(d.at(3))), "the last writer's pid");
}
