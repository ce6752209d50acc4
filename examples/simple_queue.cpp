// SimpleQueue: a plain pipe-backed queue without a feeder thread (named in seed 000).
//
//   from multiprocessing import Process, SimpleQueue
//
//   def square(inbox, outbox):
//       while (x := inbox.get()) is not None:
//           outbox.put(x * x)
//
//   if __name__ == '__main__':
//       inbox, outbox = SimpleQueue(), SimpleQueue()
//       p = Process(target=square, args=(inbox, outbox))
//       p.start()
//       for x in range(10):
//           inbox.put(x)
//       inbox.put(None)
//       print([outbox.get() for _ in range(10)])
//       p.join()
#include <iostream>
#include <optional>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void square(mp::SimpleQueue<std::optional<int>> inbox, mp::SimpleQueue<int> outbox) {
  while (auto x = inbox.get()) outbox.put(*x * *x);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::SimpleQueue<std::optional<int>> inbox;
  mp::SimpleQueue<int> outbox;
  mp::Process p(square, inbox, outbox);
  p.start();
  for (int x = 0; x < 10; ++x) inbox.put(x);
  inbox.put(std::nullopt);
  std::vector<int> squares;
  for (int n = 0; n < 10; ++n) squares.push_back(outbox.get());
  p.join();
  std::cout << mp::Object(squares) << std::endl;
  example::check(squares == std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49, 64, 81}, "the squares, in order");
}
