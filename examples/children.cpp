// active_children(), cpu_count() and current_process() (seed 000, "杂项").
//
//   import multiprocessing as mp
//
//   def wait_for_go(r):
//       r.recv()
//
//   if __name__ == '__main__':
//       print('cpu_count() =', mp.cpu_count())
//       print('current_process():', mp.current_process().name)
//       pipes = [mp.Pipe(duplex=False) for _ in range(3)]
//       ps = [mp.Process(target=wait_for_go, args=(r,)) for r, w in pipes]
//       for p in ps:
//           p.start()
//       print('active_children():', [c.name for c in mp.active_children()])
//       for r, w in pipes:
//           w.send('go')
//       for p in ps:
//           p.join()
//       print('after join:', mp.active_children())
#include <iostream>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void wait_for_go(mp::Connection r) { r.recv<std::string>(); }

void print_names(const std::vector<mp::ProcessInfo>& children) {
  std::cout << "[";
  for (std::size_t i = 0; i < children.size(); ++i) std::cout << (i ? ", " : "") << children[i].name;
  std::cout << "]" << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::cout << "cpu_count() = " << mp::cpu_count() << std::endl;
  std::cout << "current_process(): " << mp::current_process().name << std::endl;
  example::check(mp::current_process().name == "MainProcess", "the main process is MainProcess");
  example::check(!mp::parent_process(), "the main process has no parent_process()");

  std::vector<std::pair<mp::Connection, mp::Connection>> pipes;
  std::vector<mp::Process> ps;
  for (int i = 0; i < 3; ++i) {
    pipes.push_back(mp::Pipe(false));
    ps.emplace_back(wait_for_go, pipes.back().first);
  }
  for (auto& p : ps) p.start();
  std::cout << "active_children(): ";
  print_names(mp::active_children());
  example::check(mp::active_children().size() == 3, "three children wait for their go");

  for (auto& [r, w] : pipes) w.send(std::string("go"));
  for (auto& p : ps) p.join();
  std::cout << "after join: ";
  print_names(mp::active_children());
  example::check(mp::active_children().empty(), "joined children are no longer active");
}
