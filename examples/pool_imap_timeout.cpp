// IMapIterator.next(timeout): poll for results, printing a dot per timeout (seed 000).
//
//   import multiprocessing, sys
//   # calculatestar and TASKS: see calculate.hpp
//
//   if __name__ == '__main__':
//       pool = multiprocessing.Pool(4)
//
//       print('Testing IMapIterator.next() with timeout:', end='')
//       it = pool.imap(calculatestar, TASKS)
//       while 1:
//           sys.stdout.flush()
//           try:
//               sys.stdout.write('\n\t%s' % it.next(0.0002))
//           except StopIteration:
//               break
//           except multiprocessing.TimeoutError:
//               sys.stdout.write('.')
//
//       print('Testing IMapUnorderedIterator.next() with timeout:', end='')
//       it = pool.imap_unordered(calculatestar, TASKS)
//       ... the same loop
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "calculate.hpp"
#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

// Python's loop: next(timeout) until StopIteration (here: nullopt), a dot for every timeout.
std::vector<std::string> drain_with_timeout(mp::IMapIterator<std::string> it) {
  std::vector<std::string> results;
  for (;;) {
    std::cout << std::flush;
    try {
      auto x = it.next(200us);
      if (!x) break;
      std::cout << "\n\t" << *x;
      results.push_back(*x);
    } catch (const mp::TimeoutError&) {
      std::cout << '.';
    }
  }
  std::cout << "\n\n";
  return results;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Pool pool(4);
  const auto tasks = example::make_tasks();

  std::cout << "Testing IMapIterator.next() with timeout:";
  auto ordered = drain_with_timeout(pool.imap(example::calculatestar, tasks));
  example::check_answers(ordered, tasks, true, "imap");

  std::cout << "Testing IMapUnorderedIterator.next() with timeout:";
  auto unordered = drain_with_timeout(pool.imap_unordered(example::calculatestar, tasks));
  example::check_answers(unordered, tasks, false, "imap_unordered");
}
