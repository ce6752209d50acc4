// Ordered and unordered results from apply_async, imap, imap_unordered and map (seed 000).
//
//   import multiprocessing
//   # calculate, calculatestar, mul, plus and TASKS: see calculate.hpp
//
//   if __name__ == '__main__':
//       print('cpu_count() = %d\n' % multiprocessing.cpu_count())
//       pool = multiprocessing.Pool(4)
//
//       results = [pool.apply_async(calculate, t) for t in TASKS]
//       print('Ordered results using pool.apply_async():')
//       for r in results:
//           print('\t', r.get())
//
//       print('Ordered results using pool.imap():')
//       for x in pool.imap(calculatestar, TASKS):
//           print('\t', x)
//
//       print('Unordered results using pool.imap_unordered():')
//       for x in pool.imap_unordered(calculatestar, TASKS):
//           print('\t', x)
//
//       print('Ordered results using pool.map() --- will block till complete:')
//       for x in pool.map(calculatestar, TASKS):
//           print('\t', x)
#include <iostream>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "calculate.hpp"
#include "check.hpp"

namespace mp = multiproc;

void print_all(const std::string& title, const std::vector<std::string>& results) {
  std::cout << title << '\n';
  for (auto& x : results) std::cout << '\t' << x << '\n';
  std::cout << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::cout << "cpu_count() = " << mp::cpu_count() << "\n\n";
  mp::Pool pool(4);
  const auto tasks = example::make_tasks();

  std::vector<mp::AsyncResult<std::string>> async_results;
  for (auto& [func, a, b] : tasks) async_results.push_back(pool.apply_async(example::calculate, func, a, b));
  std::vector<std::string> results;
  for (auto& r : async_results) results.push_back(r.get());
  print_all("Ordered results using pool.apply_async():", results);
  example::check_answers(results, tasks, true, "apply_async");

  results.clear();
  for (const auto& x : pool.imap(example::calculatestar, tasks)) results.push_back(x);
  print_all("Ordered results using pool.imap():", results);
  example::check_answers(results, tasks, true, "imap");

  results.clear();
  for (const auto& x : pool.imap_unordered(example::calculatestar, tasks)) results.push_back(x);
  print_all("Unordered results using pool.imap_unordered():", results);
  example::check_answers(results, tasks, false, "imap_unordered");

  results = pool.map(example::calculatestar, tasks);
  print_all("Ordered results using pool.map() --- will block till complete:", results);
  example::check_answers(results, tasks, true, "map");
}
