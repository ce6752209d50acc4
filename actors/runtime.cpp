#include "actors/runtime.hpp"

#include <unistd.h>

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/io/middleman.hpp>
#include <mutex>

namespace multiproc::actors {

namespace {

struct runtime {
  caf::actor_system_config config;
  caf::actor_system sys;
  explicit runtime(caf::actor_system_config&& cfg) : config(std::move(cfg)), sys(config) {}
};

caf::actor_system_config make_config() {
  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", std::size_t{2});
  cfg.load<caf::io::middleman>();
  cfg.set("middleman.workers", std::size_t{0});
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
