// Two ways to start processes: a target function, and a subclass overriding run() (seed 004).
//
//   from multiprocessing import Process
//
//   def fun1(name):
//       print('测试%s多进程' % name)
//
//   class MyProcess(Process):
//       def __init__(self, name):
//           super(MyProcess, self).__init__()
//           self.name = name
//       def run(self):
//           print('测试%s多进程' % self.name)
//
//   if __name__ == '__main__':
//       process_list = []
//       for i in range(5):
//           p = Process(target=fun1, args=('Python',))
//           p.start()
//           process_list.append(p)
//       for p in process_list:
//           p.join()
//
//       process_list = []
//       for i in range(5):
//           p = MyProcess('Python')
//           p.start()
//           process_list.append(p)
//       for p in process_list:
//           p.join()
//       print('end')
#include <iostream>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void fun1(const std::string& name) { std::cout << "测试" << name << "多进程 (target)" << std::endl; }

class MyProcess : public mp::Process {
public:
  MyProcess() = default;  // a spawn or forkserver child makes it this way
  explicit MyProcess(std::string name) { set_name(std::move(name)); }
  void run() override {
    example::check(mp::current_process().name == name(), "the child carries the name given in the parent");
    std::cout << "测试" << name() << "多进程 (subclass)" << std::endl;
  }
  MULTIPROC_SPAWNABLE(MyProcess)  // no members of its own to carry: the name is Process's
};

template <class P>
void join_all_and_check(std::vector<P>& processes) {
  for (auto& p : processes) {
    p.join();
    example::check(p.exitcode() == 0, p.name() + " ended normally");
  }
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::vector<mp::Process> targets;
  for (int i = 0; i < 5; ++i) {
    targets.emplace_back(fun1, std::string("Python"));
    targets.back().start();
  }
  join_all_and_check(targets);

  std::vector<MyProcess> subclassed;
  for (int i = 0; i < 5; ++i) {
    subclassed.emplace_back("Python");
    subclassed.back().start();
  }
  join_all_and_check(subclassed);
  std::cout << "end" << std::endl;
}
