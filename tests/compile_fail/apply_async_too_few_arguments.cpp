// pool.apply_async(f, 1) with int f(int, int): f takes 2 arguments and 1 was given.
// first-error: static assertion failed
// first-error: takes another number of arguments than were passed
// first-error: pass exactly one argument per parameter
// context: Function = int (*)(int, int)
// context: Passed = {int}
#include <multiproc/pool.hpp>

int f(int a, int b) { return a + b; }

int main() {
  multiproc::Pool pool(1);
  return pool.apply_async(f, 1).get();
}
