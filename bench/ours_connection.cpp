// Pipe: small-message round trips and 1 MiB messages between two processes.
#include <multiproc/multiproc.hpp>

#include <string>

#include "ours.hpp"

namespace mp = multiproc;

namespace {

using bench::Clock;
using bench::seconds_since;

constexpr long warmup_round_trips = 100;
constexpr std::size_t mib = std::size_t{1} << 20;

void echo(mp::Connection conn, long rounds) {
  for (long i = 0; i < rounds; ++i) conn.send(conn.recv<long>());
}

void round_trips(mp::Connection& conn, long rounds) {
  for (long i = 0; i < rounds; ++i) {
    conn.send(i);
    if (conn.recv<long>() != i) throw mp::Error("echo returned the wrong value");
  }
}

// µs per send + recv of a small integer echoed by another process.
double pipe_roundtrip_small(long n) {
  auto [parent, child] = mp::Pipe();
  mp::Process echoer(echo, child, warmup_round_trips + n);
  echoer.start();
  child.close();
  round_trips(parent, warmup_round_trips);
  auto start = Clock::now();
  round_trips(parent, n);
  double elapsed = seconds_since(start);
  echoer.join();
  return elapsed / static_cast<double>(n) * 1e6;
}

void drain_then_ack(mp::Connection conn, long messages) {
  for (long i = 0; i < messages; ++i) conn.recv_bytes();
  conn.send(true);
}

// GB/s of n 1 MiB send_bytes() until the receiving process has them all.
double pipe_bulk_1mib(long n) {
  auto [parent, child] = mp::Pipe();
  mp::Process reader(drain_then_ack, child, n);
  reader.start();
  child.close();
  std::string payload(mib, 'x');
  auto start = Clock::now();
  for (long i = 0; i < n; ++i) parent.send_bytes(payload);
  parent.recv<bool>();
  double elapsed = seconds_since(start);
  reader.join();
  return static_cast<double>(n) * mib / elapsed / 1e9;
}

constexpr bench::Measure measures[] = {
    {"pipe_roundtrip_small", pipe_roundtrip_small},
    {"pipe_bulk_1mib", pipe_bulk_1mib},
};

} // namespace

std::span<const bench::Measure> bench::connection_measures() { return measures; }
