// Seed 000's distributed master/worker job queue (see job_queue.hpp for the Python it mirrors).
//
//   job_queue master HOST:PORT AUTHKEY   serve the queues and dispatch the seed's 20 tasks
//   job_queue worker HOST:PORT AUTHKEY   run jobs from a master until it sends EXIT
//   job_queue                            both, on 127.0.0.1, the worker in a child process
//
// Run the master on one host and any number of workers on others; every connection must know
// the authkey (CPython's HMAC challenge), so only your workers can reach the queues.
#include <iostream>
#include <optional>
#include <string>

#include "job_queue.hpp"

namespace {

int run_both() {
  std::optional<multiproc::Process> worker;
  auto results = job_queue::master("127.0.0.1:0", "jobs", [&](const std::string& address) {
    worker.emplace([](std::string a) { job_queue::worker(a, "jobs"); }, address);
    worker->start();
  });
  worker->join();
  std::sort(results.begin(), results.end());
  if (results != job_queue::expected_results() || worker->exitcode() != 0) {
    std::cerr << "the job queue lost or garbled results" << std::endl;
    return 1;
  }
  std::cout << "all " << results.size() << " results collected" << std::endl;
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  multiproc::init(argc, argv);
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode.empty()) return run_both();
  if (argc != 4 || (mode != "master" && mode != "worker")) {
    std::cerr << "usage: job_queue [master|worker HOST:PORT AUTHKEY]" << std::endl;
    return 2;
  }
  if (mode == "master") {
    job_queue::master(argv[2], argv[3]);
  } else {
    // Run first: `cout << "ran " << worker()` would print "ran " before the worker's own lines.
    int jobs = job_queue::worker(argv[2], argv[3]);
    std::cout << "ran " << jobs << " jobs" << std::endl;
  }
  return 0;
}
