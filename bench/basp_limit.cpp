// bench_basp: the limit of the measures across hosts, CAF 0.17's own network layer (the
// middleman, BASP) with nothing of ours in front. `bench_basp basp_oneway <n>` sends n small
// messages (an int64 each) one way from this host to an actor published on another
// (bench::other_hosts) and prints messages/s, from the first send until the receiver says it has
// them all (one connection: they arrive in order, so its count answers after the last).
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bench.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;

using count_atom = caf::atom_constant<caf::atom("count")>;
constexpr long warmup_messages = 1000;
constexpr int ready_timeout_ms = 30'000;

struct counter_state {
  std::int64_t received = 0;
};

caf::behavior counter(caf::stateful_actor<counter_state>* self) {
  return {
      [=](std::int64_t) { ++self->state.received; },
      [=](count_atom) { return self->state.received; },
  };
}

// In a forked child: publishes a counter on host and writes its port to ready; never returns.
[[noreturn]] void serve_counter(const bench::Host& host, int ready) {
  bench::enter(host);
  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  auto port = sys.middleman().publish(sys.spawn(counter), 0, host.ip.c_str());
  std::uint16_t p = port ? *port : 0;
  (void)!::write(ready, &p, sizeof p);
  for (;;) ::pause();  // the sender kills it
}

std::uint16_t read_port(int ready) {
  pollfd p{ready, POLLIN, 0};
  std::uint16_t port = 0;
  if (::poll(&p, 1, ready_timeout_ms) != 1 || ::read(ready, &port, sizeof port) != sizeof port || port == 0)
    throw std::runtime_error("the receiving host did not publish its actor");
  return port;
}

// Sends count messages, then waits for the receiver's total.
std::int64_t send_and_count(caf::scoped_actor& self, const caf::actor& to, long count) {
  for (long i = 0; i < count; ++i) self->send(to, std::int64_t{i});
  std::int64_t total = -1;
  self->request(to, caf::infinite, count_atom::value)
      .receive([&](std::int64_t n) { total = n; },
               [&](caf::error& e) { throw std::runtime_error(caf::to_string(e)); });
  return total;
}

double measure(const std::string& ip, std::uint16_t port, long n) {
  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  auto remote = sys.middleman().remote_actor(ip, port);
  if (!remote) throw std::runtime_error("remote_actor: " + sys.render(remote.error()));
  caf::scoped_actor self{sys};
  send_and_count(self, *remote, warmup_messages);
  auto start = Clock::now();
  auto total = send_and_count(self, *remote, n);
  double elapsed = seconds_since(start);
  if (total != warmup_messages + n) throw std::runtime_error("the receiver counted a wrong number of messages");
  return static_cast<double>(n) / elapsed;
}

double basp_oneway(long n) {
  auto host = bench::other_hosts(1).front();
  int ready[2];
  if (::pipe(ready) != 0) throw std::runtime_error("pipe failed");
  pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    ::close(ready[0]);
    try {
      serve_counter(host, ready[1]);
    } catch (...) {
      ::_exit(1);
    }
  }
  ::close(ready[1]);
  auto stop_child = [&] {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ::close(ready[0]);
  };
  try {
    double rate = measure(host.ip, read_port(ready[0]), n);
    stop_child();
    return rate;
  } catch (...) {
    stop_child();
    throw;
  }
}

constexpr bench::Measure measures[] = {
    {"basp_oneway", basp_oneway},
};

} // namespace

int main(int argc, char** argv) { return bench::run_measure(argc, argv, measures); }
