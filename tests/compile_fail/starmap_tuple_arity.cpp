// pool.starmap(f, std::vector<std::tuple<int>>) with int f(int, int): each item holds 1 of the
// 2 arguments.
// first-error: static assertion failed
// first-error: takes another number of arguments than were passed
// first-error: starmap passes each item, a tuple, as the arguments
// context: Function = int (*)(int, int)
// context: Passed = {int}
#include <multiproc/pool.hpp>

#include <tuple>
#include <vector>

int f(int a, int b) { return a + b; }

int main() {
  multiproc::Pool pool(1);
  auto results = pool.starmap(f, std::vector<std::tuple<int>>{{1}, {2}});
  return static_cast<int>(results.size());
}
