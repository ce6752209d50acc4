// pool.imap(f, std::vector<std::string>) with int f(int): each item is f's argument.
// first-error: static assertion failed
// first-error: an argument does not convert to the task function's parameter at its position
// context: Function = int (*)(int)
// context: Passed = {std::__cxx11::basic_string<char
#include <multiproc/pool.hpp>

#include <string>
#include <vector>

int f(int x) { return x; }

int main() {
  multiproc::Pool pool(1);
  int sum = 0;
  for (int r : pool.imap(f, std::vector<std::string>{"1", "2"})) sum += r;
  return sum;
}
