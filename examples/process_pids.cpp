// Processes and their pids (seeds 000, 001 and 003: "info" / "hello bob").
//
//   from multiprocessing import Process
//   import os
//
//   def info(title):
//       print(title)
//       print('module name:', __name__)
//       print('parent process:', os.getppid())
//       print('process id:', os.getpid())
//
//   def f(name):
//       info('function f')
//       print('hello', name)
//
//   if __name__ == '__main__':
//       info('main line')
//       p = Process(target=f, args=('bob',))
//       p.start()
//       p.join()
#include <unistd.h>

#include <iostream>
#include <string>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void info(const std::string& title) {
  std::cout << title << '\n'
            << "process name: " << mp::current_process().name << '\n'
            << "parent process: " << ::getppid() << '\n'
            << "process id: " << ::getpid() << "\n\n";
}

void f(const std::string& name) {
  info("function f");
  std::cout << "hello " << name << std::endl;
  example::check(mp::parent_process() && mp::parent_process()->pid == ::getppid(),
                 "parent_process() is the process that started us");
  example::check(mp::current_process().pid == ::getpid(), "current_process() is this process");
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  info("main line");
  mp::Process p(f, std::string("bob"));
  p.start();
  p.join();
  example::check(p.exitcode() == 0, "f ran to the end in the child");
  example::check(p.pid() != ::getpid(), "the child is another process");
}
