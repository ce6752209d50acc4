#include "actors/runtime.hpp"

#include <sched.h>
#include <unistd.h>

#include <caf/atom.hpp>
#include <caf/defaults.hpp>
#include <caf/io/middleman.hpp>
#include <caf/logger.hpp>
#include <chrono>
#include <latch>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "multiproc/errors.hpp"

namespace multiproc::actors {

namespace {

// A thread counts against RLIMIT_NPROC and pids.max until the kernel releases it, which can be a
// little after pthread_join() returned (the join wakes as the thread's memory is let go, the
// release comes later in its exit); then its /proc/self/task entry is gone. Waits for that, so
// that the threads the probe used are free for the system.
void await_release(const std::vector<pid_t>& tids) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (pid_t tid : tids) {
    auto entry = "/proc/self/task/" + std::to_string(tid);
    while (::access(entry.c_str(), F_OK) == 0 && std::chrono::steady_clock::now() < deadline) ::sched_yield();
  }
}

// Starts `count` threads that all run at once, then ends them. The errno of the first that
// could not start, or 0.
int probe_threads(std::size_t count) {
  std::latch release(1);
  std::vector<pid_t> tids(count, 0);
  std::vector<std::thread> threads;
  threads.reserve(count);
  int err = 0;
  for (std::size_t i = 0; i < count; ++i) {
    try {
      threads.emplace_back([&release, &tid = tids[i]] {
        tid = ::gettid();
        release.wait();
      });
    } catch (const std::system_error& e) {
      err = e.code().value();
      break;
    }
  }
  release.count_down();
  for (auto& t : threads) t.join();
  tids.resize(threads.size());
  await_release(tids);
  return err;
}

// The scheduler's threads, its clock and the printer behind aout, and for a loaded middleman its
// multiplexer and its own (detached) actor.
std::size_t threads_started_by(const caf::actor_system_config& cfg) {
  auto count = caf::get_or(cfg, "scheduler.max-threads", caf::defaults::scheduler::max_threads) + 2;
  if (!cfg.module_factories.empty()) count += 2;
  return count;
}

struct runtime {
  caf::actor_system_config config;
  caf::actor_system sys;
  explicit runtime(caf::actor_system_config&& cfg) : config(std::move(cfg)), sys(startable(config)) {}
};

caf::actor_system_config make_config() {
  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", std::size_t{2});
  cfg.load<caf::io::middleman>();
  cfg.set("middleman.workers", std::size_t{0});
  // Off by default in 0.17.6: a frozen or cut-off peer over BASP (nodes) would never be
  // noticed. A peer silent for the timeout is dropped, its actors reported down.
  cfg.set("middleman.heartbeat-interval", caf::timespan{std::chrono::seconds(1)});
  cfg.set("middleman.connection-timeout", caf::timespan{std::chrono::seconds(4)});
  return cfg;
}

struct registry {
  std::mutex m;
  pid_t owner = 0;  // the process `current` belongs to
  std::weak_ptr<caf::actor_system> current;
};

registry& reg() {
  static auto* r = new registry;  // never destroyed: children inherit it, exit never runs it
  return *r;
}

} // namespace

caf::actor_system_config& startable(caf::actor_system_config& cfg, std::size_t more) {
  auto count = threads_started_by(cfg) + more;
  if (int err = probe_threads(count))
    throw OSError("cannot start the " + std::to_string(count) + " threads the actor runtime needs (" +
                      std::error_code(err, std::generic_category()).message() +
                      "): this process or its user is at a thread limit (RLIMIT_NPROC, a cgroup's pids.max)",
                  err);
  return cfg;
}

void release_thread_logger() { caf::logger::set_current_actor_system(nullptr); }

std::shared_ptr<caf::actor_system> acquire_system() {
  auto& r = reg();
  std::lock_guard lock(r.m);
  if (r.owner == ::getpid()) {
    if (auto sys = r.current.lock()) return sys;
  }
  auto* rt = new runtime(make_config());
  std::shared_ptr<caf::actor_system> sys(&rt->sys, [rt](caf::actor_system*) { delete rt; });
  r.owner = ::getpid();
  r.current = sys;
  return sys;
}

} // namespace multiproc::actors
