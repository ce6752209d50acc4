// JoinableQueue: consumers call task_done(), the parent join()s the queue (seed 000).
//
//   import time
//   from multiprocessing import Process, JoinableQueue, Value, current_process
//   from queue import Empty
//
//   def produce(q):
//       for i in range(20):
//           print('process name: ' + current_process().name + ', put:' + str(i))
//           q.put(i)
//           time.sleep(0.001)
//       q.close()
//
//   def consume(q, handled):
//       while True:
//           try:
//               r = q.get(True, 1)
//               print('process name: ' + current_process().name + ', get:' + str(r))
//               with handled.get_lock():
//                   handled.value += 1
//               q.task_done()      # r is done
//           except Empty:
//               continue
//
//   if __name__ == '__main__':
//       q, handled = JoinableQueue(5), Value('i', 0)
//       producers = [Process(target=produce, name='p' + str(i), args=(q,)) for i in range(3)]
//       consumers = [Process(target=consume, name='c' + str(i), args=(q, handled)) for i in range(2)]
//       for c in consumers:
//           c.start()
//       for p in producers:
//           p.start()
//       for p in producers:
//           p.join()
//       q.join()                   # until every item put was task_done()
//       print('all task finished')
//       for c in consumers:
//           c.terminate()
#include <chrono>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

void produce(mp::JoinableQueue<int> q) {
  for (int i = 0; i < 20; ++i) {
    std::cout << "process name: " + mp::current_process().name + ", put:" + std::to_string(i) + "\n" << std::flush;
    q.put(i);
    std::this_thread::sleep_for(1ms);
  }
  q.close();
}

void consume(mp::JoinableQueue<int> q, mp::Value<int> handled) {
  for (;;) {
    try {
      int r = q.get(1s);
      std::cout << "process name: " + mp::current_process().name + ", get:" + std::to_string(r) + "\n" << std::flush;
      {
        std::lock_guard guard(handled.get_lock());
        handled.value() += 1;
      }
      q.task_done();
    } catch (const mp::Empty&) {
      continue;
    }
  }
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::JoinableQueue<int> q(5);
  mp::Value<int> handled(0);
  std::vector<mp::Process> producers, consumers;
  for (int i = 0; i < 3; ++i) producers.emplace_back(mp::ProcessOptions{"p" + std::to_string(i), {}}, produce, q);
  for (int i = 0; i < 2; ++i) consumers.emplace_back(mp::ProcessOptions{"c" + std::to_string(i), {}}, consume, q, handled);
  for (auto& c : consumers) c.start();
  for (auto& p : producers) p.start();
  for (auto& p : producers) p.join();
  q.join();
  std::cout << "all task finished" << std::endl;
  for (auto& c : consumers) c.terminate();
  for (auto& c : consumers) c.join();
  example::check(handled.value() == 60, "join() returned only after all 60 items were handled");
}
