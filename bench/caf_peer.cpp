// bench_caf: CAF 0.17's own actors doing what bench_ours's actor measures do, in one process:
// `bench_caf actor_request_roundtrip <n>` is a scoped_actor's blocking request to an echo actor
// running on CAF's scheduler thread, answered by a CAF behavior. CAF gets its best settings for
// this: the sharing scheduler policy (a tenth of the default's round trip here, notes/caf-0.17.md)
// and no request timeout (a finite one leaves a stale timeout message per answered request).
#include <caf/all.hpp>

#include <cstdint>
#include <stdexcept>

#include "bench.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;

constexpr long warmup_round_trips = 100;

caf::behavior echo(caf::event_based_actor*) {
  return {[](std::int64_t x) { return x; }};
}

void round_trips(caf::scoped_actor& self, const caf::actor& a, long rounds) {
  for (long i = 0; i < rounds; ++i) {
    std::int64_t got = -1;
    self->request(a, caf::infinite, std::int64_t{i})
        .receive([&](std::int64_t r) { got = r; },
                 [&](caf::error& e) { throw std::runtime_error(caf::to_string(e)); });
    if (got != i) throw std::runtime_error("the echo actor returned the wrong value");
  }
}

// µs per request + answer between the calling thread and an actor on CAF's scheduler thread.
double actor_request_roundtrip(long n) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", std::size_t{1});
  caf::actor_system sys{cfg};
  auto a = sys.spawn(echo);
  caf::scoped_actor self{sys};
  round_trips(self, a, warmup_round_trips);
  auto start = Clock::now();
  round_trips(self, a, n);
  double elapsed = seconds_since(start);
  self->send_exit(a, caf::exit_reason::user_shutdown);
  return elapsed / static_cast<double>(n) * 1e6;
}

constexpr bench::Measure measures[] = {
    {"actor_request_roundtrip", actor_request_roundtrip},
};

} // namespace

int main(int argc, char** argv) { return bench::run_measure(argc, argv, measures); }
