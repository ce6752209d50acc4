// pool.map(v, xs) with void v(int): map collects results, and v has none.
// first-error: static assertion failed
// first-error: map, imap and starmap collect the task function's results, so it must return a value
// first-error: use apply_async for a function without a result
// context: Function = void (*)(int)
#include <multiproc/pool.hpp>

#include <vector>

void v(int) {}

int main() {
  multiproc::Pool pool(1);
  pool.map(v, std::vector<int>{1, 2});
}
