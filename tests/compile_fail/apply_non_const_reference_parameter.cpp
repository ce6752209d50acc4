// pool.apply(h, 1) with void h(int&): a worker's change to its copy would reach no-one.
// first-error: static assertion failed
// first-error: takes a parameter by non-const reference
// first-error: take the parameter by value or by const reference
// context: Function = void (*)(int&)
#include <multiproc/pool.hpp>

void h(int& x) { ++x; }

int main() {
  multiproc::Pool pool(1);
  pool.apply(h, 1);
}
