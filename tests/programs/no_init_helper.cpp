// A program that uses start method spawn or forkserver (MULTIPROC_START_METHOD) and forgets
// mp::init: its spawned child (or fork server) runs main() again instead of the child's work. Mode "child-exits": that run returns at once; "child-stays":
// it blocks (on stdin, the test's pipe). Either way start() must throw ProcessError naming mp::init
// (within 10 s) and leave no process behind. Prints "error: <message>" and "children-left: N".
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include <multiproc/multiproc.hpp>

#include "proc_children.hpp"

namespace mp = multiproc;

namespace {
void nothing() {}
} // namespace

int main(int argc, char** argv) {
  std::string mode = argc == 2 ? argv[1] : "";
  if (std::getenv("NO_INIT_HELPER_CHILD") != nullptr) {
    if (mode == "child-stays") {
      std::string line;
      std::getline(std::cin, line);
    }
    return 0;
  }
  ::setenv("NO_INIT_HELPER_CHILD", "1", 1);
  mp::Process p(nothing);
  try {
    p.start();
    std::cout << "started" << std::endl;
  } catch (const mp::ProcessError& e) {
    std::cout << "error: " << e.what() << std::endl;
  }
  std::cout << "children-left: " << multiproc_test::children_of(::getpid()).size() << std::endl;
  return 0;
}
