// The main demo's job (count the primes below --size by trial division, in chunks) run by a Pool
// whose workers are spread over hosts: one here and one on every node. It prints, every tenth
// of the way, how many chunks each host has done, so a node that dies shows as a host whose
// count stops while the others take over its chunks (task_retries re-runs the chunk it held).
//
// On each node host (the same program, built there; the key in the environment or a file):
//   MULTIPROC_AUTHKEY=s3cret ./distributed_primes --multiproc-node 0.0.0.0:7000
// On the host that runs the pool:
//   MULTIPROC_AUTHKEY=s3cret ./distributed_primes --nodes node-b:7000,node-c:7000
//
// examples/distributed_primes_hosts.sh runs it over three network namespaces and kills one node
// half way (its CTest test, example_distributed_primes).
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "primes.hpp"

namespace mp = multiproc;
using example::Range;
using Counted = std::pair<std::uint64_t, std::string>;  // primes in a chunk, the host that counted

std::string host_name() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

Counted count_primes(Range range) { return {example::primes_in(range), host_name()}; }
MULTIPROC_EXPORT(count_primes);  // runs on the nodes, found there by this name

// Chunks done per host, printed every tenth of the way; "half way" is the line that
// distributed_primes_hosts.sh waits for to kill a node.
class HostProgress {
public:
  explicit HostProgress(std::size_t total) : total_(total) {}
  void done_by(const std::string& host) {
    ++per_host_[host];
    ++done_;
    bool half = done_ == (total_ + 1) / 2;
    if (half || 10 * done_ / total_ != 10 * (done_ - 1) / total_) print(half ? "  <- half way" : "");
  }
  void print(const char* note) const {
    std::printf("%3zu%% (%zu/%zu chunks)", 100 * done_ / total_, done_, total_);
    for (const auto& [host, n] : per_host_) std::printf("   %s: %zu", host.c_str(), n);
    std::printf("%s\n", note);
    std::fflush(stdout);
  }

private:
  std::size_t total_, done_ = 0;
  std::map<std::string, std::size_t> per_host_;
};

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> items;
  for (std::size_t start = 0; start <= list.size();) {
    auto end = std::min(list.find(',', start), list.size());
    if (end > start) items.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return items;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);  // with --multiproc-node host:port: serves as a node, never returns
  std::uint64_t size = 2'000'000;
  std::size_t chunks = 40;
  unsigned processes = 1, per_node = 1, retries = 2;
  std::string nodes;
  CLI::App app{"Counts the primes below --size with a Pool whose workers are here and on --nodes."};
  app.add_option("--nodes", nodes, "host:port of serving nodes, comma-separated")->required();
  app.add_option("--size", size, "count the primes below this number")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--chunks", chunks, "pieces the range is split into")->capture_default_str()->check(CLI::Range(2ul, 100'000ul));
  app.add_option("--processes", processes, "workers on this host")->capture_default_str();
  app.add_option("--per-node", per_node, "workers on each node (0: its cpu_count)")->capture_default_str();
  app.add_option("--retries", retries, "re-runs of a chunk whose worker or node died")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const char* key = std::getenv("MULTIPROC_AUTHKEY");
  if (!key || !*key) {
    std::fprintf(stderr, "set MULTIPROC_AUTHKEY to the nodes' key\n");
    return 2;
  }

  mp::PoolOptions options;
  options.processes = processes;
  options.nodes = split_list(nodes);
  options.authkey = key;
  options.processes_per_node = per_node;
  options.task_retries = retries;
  mp::Pool pool(options);
  std::printf("pool on %s: %u here, %u on each of %zu nodes, %zu chunks, task_retries %u\n", host_name().c_str(),
              processes, per_node, options.nodes.size(), chunks, retries);
  std::fflush(stdout);

  HostProgress progress(chunks);
  std::uint64_t total = 0;
  for (const auto& [count, host] : pool.imap_unordered(count_primes, example::split(size, chunks))) {
    total += count;
    progress.done_by(host);
  }
  pool.close();
  pool.join();
  std::printf("primes below %llu: %llu\n", static_cast<unsigned long long>(size), static_cast<unsigned long long>(total));
  return 0;
}
