// pool.map with a capturing lambda: one error that says to use a plain function or a
// captureless lambda, not pages of "forming reference to void".
// first-error: static assertion failed
// first-error: a task must be a plain function or a captureless lambda
// first-error: Pass that state as task arguments, or set it up in PoolOptions::initializer
// context: Function = main()::<lambda(int)>
#include <multiproc/pool.hpp>

#include <vector>

int main() {
  multiproc::Pool pool(1);
  int offset = 3;
  std::vector<int> xs{1, 2, 3};
  auto ys = pool.map([offset](int x) { return x + offset; }, xs);
  return static_cast<int>(ys.size());
}
