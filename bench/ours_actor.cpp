// Actors: a request round trip to an actor in another process, and one-way sends to it.
#include <multiproc/multiproc.hpp>
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "ours.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

using bench::Clock;
using bench::seconds_since;

constexpr long warmup_round_trips = 100;

struct Count {
  MSGPACK_DEFINE();
};

mp::Behavior echo(mp::ActorContext&) {
  return {[](long x) { return x; }};
}

// Counts the longs it receives; Count answers how many.
mp::Behavior sink(mp::ActorContext&) {
  auto seen = std::make_shared<long>(0);
  return {[seen](long) { ++*seen; }, [seen](const Count&) { return *seen; }};
}

void round_trips(const mp::ActorRef& a, long rounds) {
  for (long i = 0; i < rounds; ++i)
    if (a.request<long>(i, 60s) != i) throw mp::Error("the echo actor returned the wrong value");
}

// µs per request + answer of a small integer to an actor in another process.
double actor_request_roundtrip(long n) {
  auto a = mp::spawn(echo);
  round_trips(a, warmup_round_trips);
  auto start = Clock::now();
  round_trips(a, n);
  double elapsed = seconds_since(start);
  a.stop();
  return elapsed / static_cast<double>(n) * 1e6;
}

// Messages/s of n sends of a small integer, until the actor has handled them all (the Count
// request queues behind them).
double actor_send_1to1(long n) {
  auto a = mp::spawn(sink);
  a.request<long>(Count{}, 60s);  // started and connected
  auto start = Clock::now();
  for (long i = 0; i < n; ++i) a.send(i);
  if (a.request<long>(Count{}, 60s) != n) throw mp::Error("the sink actor lost messages");
  double elapsed = seconds_since(start);
  a.stop();
  return static_cast<double>(n) / elapsed;
}

// µs from a supervised child's SIGKILL to its replacement answering a request, found by its
// name as a client would find it.
double restart_to_answer(long n, bool standby) {
  auto spec = mp::child("echo", echo);
  spec.name = "bench-supervisor-echo-" + std::to_string(::getpid());
  mp::Supervisor sup(
      {.intensity = static_cast<unsigned>(n) + 1, .period = std::chrono::milliseconds(3'600'000), .standby = standby},
      {spec});
  double total = 0;
  for (long i = 0; i < n; ++i) {
    auto old = sup.child("echo");
    if (old.request<long>(i, 60s) != i) throw mp::Error("the echo actor returned the wrong value");
    auto start = Clock::now();
    ::kill(old.pid(), SIGKILL);
    for (;;) {
      auto now = mp::whereis(spec.name);
      if (now && now != old && now.request<long>(i, 60s) == i) break;
    }
    total += seconds_since(start);
    // A standby is made 5 ms after a restart: crashes come seconds apart, not back to back, so
    // the next one waits for it. The wait spins, as the back-to-back loops of the other measures
    // keep the CPUs awake (on this VM an idle CPU's wake-up adds ~100 µs to each hand-off).
    if (standby)
      for (auto until = Clock::now() + std::chrono::milliseconds(20); Clock::now() < until;) {
      }
  }
  return total / static_cast<double>(n) * 1e6;
}

double supervisor_restart(long n) { return restart_to_answer(n, false); }
// The same with SupervisorOptions::standby: the replacement was started before the crash.
double supervisor_restart_standby(long n) { return restart_to_answer(n, true); }

constexpr bench::Measure measures[] = {
    {"actor_request_roundtrip", actor_request_roundtrip},
    {"actor_send_1to1", actor_send_1to1},
    {"supervisor_restart", supervisor_restart},
    {"supervisor_restart_standby", supervisor_restart_standby},
};

} // namespace

std::span<const bench::Measure> bench::actor_measures() { return measures; }
