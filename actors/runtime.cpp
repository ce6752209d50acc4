#include "actors/runtime.hpp"

#include <unistd.h>

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/io/middleman.hpp>
#include <memory>
#include <mutex>

#include "launch.hpp"

namespace multiproc::actors {

namespace {

struct runtime {
  pid_t owner = ::getpid();
  caf::actor_system_config config;
  std::unique_ptr<caf::actor_system> sys;
};

std::mutex& runtime_mutex() {
  static auto* m = new std::mutex;  // never destroyed: used from exit hooks
  return *m;
}
// Never deleted: a forked child drops its parent's runtime on the floor instead of running a
// destructor that would join threads the child does not have.
runtime* current = nullptr;

void stop_runtime() {
  std::lock_guard lock(runtime_mutex());
  if (current && current->owner == ::getpid()) current->sys.reset();
}

runtime* make_runtime() {
  auto* rt = new runtime;
  rt->config.set("scheduler.policy", caf::atom("sharing"));
  rt->config.set("scheduler.max-threads", std::size_t{2});
  rt->config.load<caf::io::middleman>();
  rt->config.set("middleman.workers", std::size_t{0});
  rt->sys = std::make_unique<caf::actor_system>(rt->config);
  return rt;
}

} // namespace

caf::actor_system& system() {
  std::lock_guard lock(runtime_mutex());
  if (!current || current->owner != ::getpid() || !current->sys) {
    current = make_runtime();
    // After queues flushed (0) and children were joined (10).
    detail::at_process_exit(stop_runtime, 20);
  }
  return *current->sys;
}

} // namespace multiproc::actors
