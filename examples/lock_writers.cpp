// Ten writers append to one file under a Lock, with and without `with` (seed 000).
//
//   import multiprocessing
//
//   def worker_with(lock, f, i):
//       with lock:
//           fs = open(f, 'a+')
//           fs.write('Lock acquired via with ' + str(i) + '\n')
//           fs.close()
//
//   def worker_no_with(lock, f, i):
//       lock.acquire()
//       try:
//           fs = open(f, 'a+')
//           fs.write('Lock acquired directly ' + str(i) + '\n')
//           fs.close()
//       finally:
//           lock.release()
//
//   if __name__ == '__main__':
//       f = 'file.txt'
//       lock = multiprocessing.Lock()
//       writers = [multiprocessing.Process(target=worker_with, args=(lock, f, i)) for i in range(10)]
//       writers += [multiprocessing.Process(target=worker_no_with, args=(lock, f, i)) for i in range(10)]
//       for w in writers:
//           w.start()
//       for w in writers:
//           w.join()
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
namespace fs = std::filesystem;

void append_line(const std::string& f, const std::string& line) {
  std::ofstream out(f, std::ios::app);
  out << line << '\n';
}

void worker_with(mp::Lock lock, std::string f, int i) {
  std::lock_guard guard(lock);  // Python's `with lock:`
  append_line(f, "Lock acquired via with " + std::to_string(i));
}

void worker_no_with(mp::Lock lock, std::string f, int i) {
  lock.acquire();
  try {
    append_line(f, "Lock acquired directly " + std::to_string(i));
  } catch (...) {
    lock.release();
    throw;
  }
  lock.release();
}

std::vector<std::string> lines_of(const fs::path& f) {
  std::ifstream in(f);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  // A string, as in Python: it crosses into a spawn or forkserver child as MessagePack (a path does not).
  std::string f = (fs::temp_directory_path() / ("lock_writers_" + std::to_string(::getpid()) + ".txt")).string();
  mp::Lock lock;
  std::vector<mp::Process> writers;
  for (int i = 0; i < 10; ++i) writers.emplace_back(worker_with, lock, f, i);
  for (int i = 0; i < 10; ++i) writers.emplace_back(worker_no_with, lock, f, i);
  for (auto& w : writers) w.start();
  for (auto& w : writers) w.join();

  auto lines = lines_of(f);
  fs::remove(f);
  for (auto& line : lines) std::cout << line << '\n';
  std::sort(lines.begin(), lines.end());
  std::vector<std::string> expected;
  for (int i = 0; i < 10; ++i) {
    expected.push_back("Lock acquired directly " + std::to_string(i));
    expected.push_back("Lock acquired via with " + std::to_string(i));
  }
  std::sort(expected.begin(), expected.end());
  example::check(lines == expected, "twenty whole lines, one per writer");
}
