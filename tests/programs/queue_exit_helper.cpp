// A whole program for what only a real main() can show about queues: items the main process put
// are delivered when main returns without close() (the exit flush runs before the exit function
// joins the children). test_queues.cpp runs it and reads the consumer's one line of output.
#include <unistd.h>

#include <chrono>
#include <string>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

namespace {

constexpr int items = 20000;

void consume_in_order(mp::Queue<int> q) {
  int in_order = 0;
  for (int i = 0; i < items; ++i)
    if (q.get(std::chrono::seconds(30)) == i) ++in_order;
  std::string line = "consumer got " + std::to_string(in_order) + " in order\n";
  [[maybe_unused]] auto n = ::write(STDOUT_FILENO, line.data(), line.size());
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Queue<int> q;
  mp::Process consumer(consume_in_order, q);
  consumer.start();
  for (int i = 0; i < items; ++i) q.put(i);
  return 0;  // no close(), no join: the exit flush and the exit function do both
}
