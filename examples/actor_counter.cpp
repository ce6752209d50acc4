// A counter service: one actor owns the count, several client processes update and read it.
// Python has no actors; the nearest is a server process that owns the state and answers over
// pipes, which is what an actor is, with the loop written for you:
//
//   def counter(conn):               # the service: one message at a time
//       n = 0
//       while (msg := conn.recv()) is not None:
//           if msg[0] == 'add': n += msg[1]
//           else: conn.send(n)
//
// Here each client process holds the counter's ActorRef (refs are values: they pass as Process
// arguments) and talks to the actor directly; the actor handles one message at a time, so no
// update is lost without any lock.
#include <iostream>
#include <memory>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

struct Add {
  int n = 0;
  MSGPACK_DEFINE(n);
};
struct Get {
  MSGPACK_DEFINE();
};

mp::Behavior counter(mp::ActorContext&, int start) {
  auto n = std::make_shared<int>(start);
  return {
      [n](const Add& a) { *n += a.n; },
      [n](const Get&) { return *n; },
  };
}

void client(mp::ActorRef counter, int id) {
  for (int i = 0; i < 1000; ++i) counter.send(Add{1});
  // A request from this process arrives after its sends: it sees at least its own 1000.
  int seen = counter.request<int>(Get{}, 10s);
  example::check(seen >= 1000, "a client sees its own updates");
  std::cout << "client " << id << " done" << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  auto c = mp::spawn(counter, 0);
  std::cout << "counter actor running as pid " << c.pid() << std::endl;
  std::vector<mp::Process> clients;
  for (int id = 0; id < 4; ++id) clients.emplace_back(client, c, id);
  for (auto& p : clients) p.start();
  for (auto& p : clients) {
    p.join();
    example::check(p.exitcode() == 0, "every client succeeded");
  }
  int total = c.request<int>(Get{}, 10s);
  std::cout << "total: " << total << std::endl;
  example::check(total == 4000, "no update was lost");
  c.stop();
  std::cout << "counter alive after stop: " << std::boolalpha << c.alive() << std::endl;
}
