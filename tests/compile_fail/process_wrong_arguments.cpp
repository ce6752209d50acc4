// mp::Process(target, args...) whose target cannot take the arguments.
// first-error: static assertion failed
// first-error: multiproc::Process: the target cannot be called with the arguments given
// first-error: pass one argument per parameter
// context: Target = void (*)(int, int)
// context: Passed = {const char*}
#include <multiproc/process.hpp>

void work(int, int) {}

int main() {
  multiproc::Process p(work, "x");
  p.start();
  p.join();
}
