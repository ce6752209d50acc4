// Nodes: Pool.map over two node processes (this program serving, the functions exported), each
// on a host of its own (network namespaces that bench/run makes, bench::other_hosts).
#include <multiproc/multiproc.hpp>

#include <numeric>
#include <vector>

#include "ours.hpp"

namespace mp = multiproc;

namespace {

using bench::Clock;
using bench::seconds_since;

const char* const node_key = "bench node key";
constexpr long warmup_tasks = 1000;

long node_square(long x) { return x * x; }
MULTIPROC_EXPORT(node_square);

void serve(std::string netns, std::string ip, mp::Connection report) {
  bench::enter({netns, ip});
  mp::serve_node(ip + ":0", node_key, [&](const std::string& bound) { report.send(bound); });
}

std::string start_node(mp::Process& p, const bench::Host& host) {
  auto [r, w] = mp::Pipe(false);
  p = mp::Process(serve, host.netns, host.ip, w);
  p.start();
  w.close();
  if (!r.poll(std::chrono::seconds(30))) throw mp::TimeoutError("a node did not start");
  return r.recv<std::string>();
}

// Tasks/s of pool.map(node_square, 0..n-1) at the default chunksize on a pool whose workers are
// all on two nodes, one each (the nodes' CPUs are this machine's: one worker each keeps the
// relay processes from crowding them).
double node_pool_map(long n) {
  auto hosts = bench::other_hosts(2);
  mp::Process a, b;
  mp::PoolOptions options;
  options.processes = 0;
  options.nodes = {start_node(a, hosts[0]), start_node(b, hosts[1])};
  options.authkey = node_key;
  options.processes_per_node = 1;
  double rate;
  {
    mp::Pool pool(options);
    std::vector<long> xs(static_cast<std::size_t>(n));
    std::iota(xs.begin(), xs.end(), 0L);
    pool.map(node_square, std::vector<long>(xs.begin(), xs.begin() + warmup_tasks));
    auto start = Clock::now();
    auto squares = pool.map(node_square, xs);
    rate = static_cast<double>(n) / seconds_since(start);
    if (squares.back() != node_square(n - 1)) throw mp::Error("map returned wrong results");
  }
  a.kill();
  b.kill();
  a.join();
  b.join();
  return rate;
}

constexpr bench::Measure measures[] = {
    {"node_pool_map", node_pool_map},
};

} // namespace

namespace bench {
std::span<const Measure> node_measures() { return measures; }
} // namespace bench
