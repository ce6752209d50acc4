// connection.wait over several readers (seed 003).
//
//   from multiprocessing import Process, Pipe, current_process
//   from multiprocessing.connection import wait
//
//   def foo(w):
//       for i in range(5):
//           w.send((i, current_process().name))
//       w.close()
//
//   if __name__ == '__main__':
//       readers = []
//       for i in range(2):
//           r, w = Pipe(duplex=False)
//           readers.append(r)
//           p = Process(target=foo, args=(w,))
//           p.start()
//           w.close()    # only the child writes: its end of the pipe is the only one left
//
//       while readers:
//           for r in wait(readers):
//               try:
//                   msg = r.recv()
//               except EOFError:
//                   readers.remove(r)
//               else:
//                   print(msg)
#include <algorithm>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

using Message = std::pair<int, std::string>;

void foo(mp::Connection w) {
  for (int i = 0; i < 5; ++i) w.send(Message{i, mp::current_process().name});
  w.close();
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::vector<mp::Connection> readers;
  std::vector<mp::Process> writers;
  for (int i = 0; i < 2; ++i) {
    auto [r, w] = mp::Pipe(false);
    readers.push_back(r);
    writers.emplace_back(foo, w);
    writers.back().start();
    w.close();
  }

  std::map<std::string, std::vector<int>> received;  // per writer, in arrival order
  while (!readers.empty()) {
    for (auto& r : mp::connection::wait(readers)) {
      try {
        auto [i, name] = r.recv<Message>();
        std::cout << "(" << i << ", '" << name << "')" << std::endl;
        received[name].push_back(i);
      } catch (const mp::EOFError&) {
        std::erase(readers, r);
      }
    }
  }

  for (auto& p : writers) p.join();
  example::check(received.size() == 2, "both writers were heard");
  for (auto& [name, numbers] : received)
    example::check(numbers == std::vector<int>{0, 1, 2, 3, 4}, name + " sent 0..4 in order");
}
