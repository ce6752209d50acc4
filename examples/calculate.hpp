// The tasks of seed 000's pool examples and their check, shared by the pool_*.cpp examples:
//
//   def calculate(func, args):
//       result = func(*args)
//       return '%s says that %s%s = %s' % (
//           multiprocessing.current_process().name, func.__name__, args, result)
//
//   def calculatestar(args):
//       return calculate(*args)
//
//   def mul(a, b):
//       time.sleep(0.002 * random.random())
//       return a * b
//
//   def plus(a, b):
//       time.sleep(0.002 * random.random())
//       return a + b
//
//   TASKS = [(mul, (i, 7)) for i in range(10)] + [(plus, (i, 8)) for i in range(10)]
//
// A Python task carries the function object itself. Here a task names its function instead:
// arguments and results cross processes as MessagePack data, and data cannot hold code.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace example {

namespace mp = multiproc;

// Sleeps up to 2 ms, as the seed sleeps up to half a second, so results finish out of order.
inline void nap() {
  thread_local std::minstd_rand random(static_cast<unsigned>(::getpid()));
  std::this_thread::sleep_for(std::chrono::microseconds(random() % 2000));
}

inline int mul(int a, int b) {
  nap();
  return a * b;
}

inline int plus(int a, int b) {
  nap();
  return a + b;
}

using Task = std::tuple<std::string, int, int>;  // (function name, a, b)

// What calculate() says after "<worker name> says that ".
inline std::string calculation(const std::string& func, int a, int b, int result) {
  return func + "(" + std::to_string(a) + ", " + std::to_string(b) + ") = " + std::to_string(result);
}

inline std::string calculate(const std::string& func, int a, int b) {
  int result = func == "mul" ? mul(a, b) : plus(a, b);
  return mp::current_process().name + " says that " + calculation(func, a, b, result);
}

inline std::string calculatestar(const Task& task) { return std::apply(calculate, task); }

inline std::vector<Task> make_tasks() {
  std::vector<Task> tasks;
  for (int i = 0; i < 10; ++i) tasks.emplace_back("mul", i, 7);
  for (int i = 0; i < 10; ++i) tasks.emplace_back("plus", i, 8);
  return tasks;
}

// What a worker's line must end with to answer task: " says that mul(3, 7) = 21".
inline std::string expected_answer(const Task& task) {
  auto& [func, a, b] = task;
  return " says that " + calculation(func, a, b, func == "mul" ? a * b : a + b);
}

// Whether line comes from a pool worker, named as its start method names it.
inline bool from_pool_worker(const std::string& line) {
  return line.starts_with("ForkPoolWorker-") || line.starts_with("SpawnPoolWorker-") ||
         line.starts_with("ForkServerPoolWorker-");
}

// Whether line is the answer to task, from any pool worker.
inline bool answers(const std::string& line, const Task& task) {
  return from_pool_worker(line) && line.ends_with(expected_answer(task));
}

// Checks that results answer tasks one to one: result i answers task i when ordered, else in
// any order (every answer is unique, so sorted answers must match the sorted expected ones).
inline void check_answers(const std::vector<std::string>& results, const std::vector<Task>& tasks, bool ordered,
                   const std::string& how) {
  check(results.size() == tasks.size(), how + ": one result per task");
  if (ordered) {
    for (std::size_t i = 0; i < results.size(); ++i)
      check(answers(results[i], tasks[i]), how + ": result " + std::to_string(i) + " answers task " + std::to_string(i));
    return;
  }
  std::vector<std::string> got, expected;
  for (auto& line : results) {
    check(from_pool_worker(line), how + ": " + line + " comes from a pool worker");
    got.push_back(line.substr(line.find(" says that ")));
  }
  for (auto& task : tasks) expected.push_back(expected_answer(task));
  std::sort(got.begin(), got.end());
  std::sort(expected.begin(), expected.end());
  check(got == expected, how + ": every task answered once");
}

} // namespace example
