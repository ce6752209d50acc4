// pool.apply_async(f, std::string("x"), 2) with int f(int, int): argument 1 is a std::string.
// first-error: static assertion failed
// first-error: an argument does not convert to the task function's parameter at its position
// first-error: pass a value of each parameter's type
// context: Function = int (*)(int, int)
// context: Passed = {std::__cxx11::basic_string<char
#include <multiproc/pool.hpp>

#include <string>

int f(int a, int b) { return a + b; }

int main() {
  multiproc::Pool pool(1);
  return pool.apply_async(f, std::string("x"), 2).get();
}
