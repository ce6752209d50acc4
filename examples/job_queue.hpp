// Seed 000's master/worker job queue over a BaseManager, shared by examples/job_queue.cpp and the
// two-host test (tests/test_basemanager.cpp):
//
//   class Master:
//       def start(self, tasks):
//           BaseManager.register('get_dispatched_job_queue', callable=self.get_dispatched_job_queue)
//           BaseManager.register('get_finished_job_queue', callable=self.get_finished_job_queue)
//           manager = BaseManager(address=('localhost', 58881), authkey='jobs')
//           manager.start()
//           dispatched_jobs = manager.get_dispatched_job_queue()
//           finished_jobs = manager.get_finished_job_queue()
//           for t in TASKS:
//               dispatched_jobs.put(t)
//           while not dispatched_jobs.empty():
//               res = finished_jobs.get()
//               print(res)
//           dispatched_jobs.put('EXIT')
//           time.sleep(1)
//           manager.shutdown()
//
//   class Slave:
//       def start(self):
//           BaseManager.register('get_dispatched_job_queue')
//           BaseManager.register('get_finished_job_queue')
//           manager = BaseManager(address=(server, 58881), authkey='jobs')
//           manager.connect()
//           dispatched_jobs = manager.get_dispatched_job_queue()
//           finished_jobs = manager.get_finished_job_queue()
//           while True:
//               func_args = dispatched_jobs.get()
//               if func_args == 'EXIT':
//                   break
//               res = func_args[0](*func_args[1])
//               finished_jobs.put(res)
//
//   TASKS = [(mul, (i, 7)) for i in range(10)] + [(plus, (i, 8)) for i in range(10)]
//
// Differences, on purpose: a job names its function ("mul", "plus") because MessagePack data
// cannot carry code; the master collects exactly one result per task rather than polling
// empty(); and the dispatched queue is joinable, so the master shuts down once the worker has
// taken EXIT instead of sleeping a second and hoping.
#pragma once

#include <algorithm>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

namespace job_queue {

namespace mp = multiproc;

struct Job {
  std::string fn;  // "mul", "plus" or "EXIT"
  int a = 0;
  int b = 0;
  MSGPACK_DEFINE(fn, a, b);
};

inline std::vector<Job> seed_tasks() {
  std::vector<Job> tasks;
  for (int i = 0; i < 10; ++i) tasks.push_back({"mul", i, 7});
  for (int i = 0; i < 10; ++i) tasks.push_back({"plus", i, 8});
  return tasks;
}

inline int run(const Job& job) {
  if (job.fn == "mul") return job.a * job.b;
  if (job.fn == "plus") return job.a + job.b;
  throw std::invalid_argument("unknown job function '" + job.fn + "'");
}

inline void register_queues(mp::BaseManager& manager) {
  manager.register_typeid("get_dispatched_job_queue", mp::Builtin::JoinableQueue, mp::Scope::shared);
  manager.register_typeid("get_finished_job_queue", mp::Builtin::Queue, mp::Scope::shared);
}

// Serves the two queues on address, dispatches the seed's tasks, collects one result per task,
// sends EXIT and shuts down once a worker took it. on_listening(address) runs when workers can
// connect. Returns the results in the order they came.
inline std::vector<int> master(const std::string& address, const std::string& authkey,
                               const std::function<void(const std::string&)>& on_listening = {}) {
  mp::BaseManager manager(address, authkey);
  register_queues(manager);
  manager.start();
  std::cout << "manager started on " << manager.address() << std::endl;
  if (on_listening) on_listening(manager.address());
  auto dispatched = manager.proxy<mp::JoinableQueueProxy<Job>>("get_dispatched_job_queue");
  auto finished = manager.proxy<mp::QueueProxy<int>>("get_finished_job_queue");
  auto tasks = seed_tasks();
  for (const auto& t : tasks) dispatched.put(t);
  std::vector<int> results;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    results.push_back(finished.get());
    std::cout << results.back() << std::endl;
  }
  dispatched.put(Job{"EXIT"});
  dispatched.join();
  manager.shutdown();
  return results;
}

// Connects to the master at address and runs jobs until EXIT; returns how many it ran.
inline int worker(const std::string& address, const std::string& authkey) {
  std::cout << "Connect to server " << address << "..." << std::endl;
  mp::BaseManager manager(address, authkey);
  manager.connect();
  auto dispatched = manager.proxy<mp::JoinableQueueProxy<Job>>("get_dispatched_job_queue");
  auto finished = manager.proxy<mp::QueueProxy<int>>("get_finished_job_queue");
  int done = 0;
  for (;;) {
    Job job = dispatched.get();
    dispatched.task_done();
    if (job.fn == "EXIT") return done;
    int res = run(job);
    std::cout << "(" << job.a << ", " << job.b << ") " << res << std::endl;
    finished.put(res);
    ++done;
  }
}

// The results the seed's tasks must give, sorted.
inline std::vector<int> expected_results() {
  std::vector<int> out;
  for (const auto& t : seed_tasks()) out.push_back(run(t));
  std::sort(out.begin(), out.end());
  return out;
}

} // namespace job_queue
