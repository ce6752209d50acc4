// The smallest useful multiproc program, built by a project outside multiproc: a child process
// sends one message back through a Pipe, and a Pool squares a few numbers, with the log on. The
// Pool and the log live in plugins (libmultiproc_actors, libmultiproc_log) that libmultiproc loads
// from its own directory. Exits 0 when the message, the child's exit code and the squares are right.
#include <multiproc/multiproc.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace mp = multiproc;

namespace {

const std::string greeting = "hello from the child";

void send_greeting(mp::Connection conn) { conn.send(greeting); }

int square(int x) { return x * x; }

bool pipe_from_child_works() {
  auto [parent_end, child_end] = mp::Pipe();
  mp::Process child(send_greeting, child_end);
  child.start();
  const bool arrived = parent_end.poll(std::chrono::seconds(30));
  const std::string received = arrived ? parent_end.recv<std::string>() : "";
  const bool ended = child.join(std::chrono::seconds(30));
  if (!ended) {
    child.kill();
    child.join();
  }
  std::printf("received \"%s\", child exit code %d\n", received.c_str(), child.exitcode().value_or(-1000));
  return received == greeting && child.exitcode() == 0;
}

bool pool_works() {
  mp::Pool pool(2);
  const std::vector<int> squares = pool.map(square, std::vector<int>{1, 2, 3});
  std::printf("pool squares: %d %d %d\n", squares.at(0), squares.at(1), squares.at(2));
  return squares == std::vector<int>{1, 4, 9};
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::log_to_stderr().log(mp::LogLevel::warning, "the log plugin is loaded");
  const bool pipe_ok = pipe_from_child_works();
  const bool pool_ok = pool_works();
  return pipe_ok && pool_ok ? 0 : 1;
}
