// Three producers and two consumers on a bounded Queue (seed 000, "Queue").
//
//   import time
//   from multiprocessing import Process, Queue, current_process
//   from queue import Empty
//
//   def produce(q):
//       for i in range(20):
//           print('process name: ' + current_process().name + ', put:' + str(i))
//           q.put(i)          # blocks while 5 items wait: the queue is bounded
//           time.sleep(0.001)
//       q.close()
//
//   def consume(q, done):
//       while True:
//           try:
//               r = q.get(True, 1)
//               print('process name: ' + current_process().name + ', get:' + str(r))
//               done.put(r)
//           except Empty:
//               continue
//
//   if __name__ == '__main__':
//       q, done = Queue(5), Queue()
//       producers = [Process(target=produce, name='p' + str(i), args=(q,)) for i in range(3)]
//       consumers = [Process(target=consume, name='c' + str(i), args=(q, done)) for i in range(2)]
//       for c in consumers:
//           c.start()
//       for p in producers:
//           p.start()
//       for p in producers:
//           p.join()
//       # The seed terminates the consumers right here, though they may not have handled
//       # everything yet (it says so, and recommends JoinableQueue). We first collect all 60.
//       handled = sorted(done.get(timeout=10) for _ in range(60))
//       for c in consumers:
//           c.terminate()
#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

void produce(mp::Queue<int> q) {
  for (int i = 0; i < 20; ++i) {
    std::cout << "process name: " + mp::current_process().name + ", put:" + std::to_string(i) + "\n" << std::flush;
    q.put(i);
    std::this_thread::sleep_for(1ms);
  }
  q.close();
}

void consume(mp::Queue<int> q, mp::Queue<int> done) {
  for (;;) {
    try {
      int r = q.get(1s);
      std::cout << "process name: " + mp::current_process().name + ", get:" + std::to_string(r) + "\n" << std::flush;
      done.put(r);
    } catch (const mp::Empty&) {
      continue;
    }
  }
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Queue<int> q(5), done;
  std::vector<mp::Process> producers, consumers;
  for (int i = 0; i < 3; ++i) producers.emplace_back(mp::ProcessOptions{"p" + std::to_string(i), {}}, produce, q);
  for (int i = 0; i < 2; ++i) consumers.emplace_back(mp::ProcessOptions{"c" + std::to_string(i), {}}, consume, q, done);
  for (auto& c : consumers) c.start();
  for (auto& p : producers) p.start();
  for (auto& p : producers) p.join();

  std::vector<int> handled;
  for (int n = 0; n < 60; ++n) handled.push_back(done.get(10s));
  for (auto& c : consumers) c.terminate();
  for (auto& c : consumers) c.join();

  std::sort(handled.begin(), handled.end());
  std::vector<int> expected;
  for (int i = 0; i < 20; ++i) expected.insert(expected.end(), 3, i);
  example::check(handled == expected, "every item of every producer was consumed exactly once");
  std::cout << "all 60 items handled" << std::endl;
}
