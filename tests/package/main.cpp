// The smallest useful multiproc program, built by a project outside multiproc: a child process
// sends one message back through a Pipe. Exits 0 when the message and the child's exit code are right.
#include <multiproc/multiproc.hpp>

#include <chrono>
#include <cstdio>
#include <string>

namespace mp = multiproc;

namespace {

const std::string greeting = "hello from the child";

void send_greeting(mp::Connection conn) { conn.send(greeting); }

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
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
  return received == greeting && child.exitcode() == 0 ? 0 : 1;
}
