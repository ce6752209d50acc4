// pool.apply(g, 1, 2, 3) with int g(int): the extra arguments are an error, not dropped.
// first-error: static assertion failed
// first-error: takes another number of arguments than were passed
// first-error: pass exactly one argument per parameter
// context: Function = int (*)(int)
// context: Passed = {int, int, int}
#include <multiproc/pool.hpp>

int g(int a) { return a * 2; }

int main() {
  multiproc::Pool pool(1);
  return pool.apply(g, 1, 2, 3);
}
