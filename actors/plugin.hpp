// The boundary between libmultiproc and libmultiproc_actors, the shared library that holds every
// CAF-based part (the pool supervisor, the manager server and its object actors, mp::Supervisor).
//
// libmultiproc never links CAF: a program that only uses Process, Pipe, Queue or the locks loads
// none of it, and each of its forks copies far fewer mappings. The first Pool or Manager loads
// libmultiproc_actors with dlopen (framework/src/actors_plugin.hpp) and calls the one extern "C"
// entry below, which returns the table of factories; everything else goes through the table.
// This header is CAF-free.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "actors/manager_server.hpp"
#include "actors/node_agent.hpp"
#include "actors/pool_supervisor.hpp"
#include "actors/supervisor.hpp"

namespace multiproc::actors {

// Changes whenever the table or a type it passes changes shape: a plugin from another build is
// refused instead of being called with the wrong layout.
inline constexpr std::uint32_t plugin_abi = 6;

struct plugin_table {
  std::uint32_t abi;
  std::unique_ptr<pool_supervisor> (*make_pool_supervisor)(pool_control& pool, restart_intensity intensity);
  void (*serve_manager)(const detail::manager::ServerConfig& config,
                        const std::function<void(const std::string&)>& ready);
  std::unique_ptr<supervisor_handle> (*make_supervisor)(SupervisorOptions options, std::vector<ChildSpec> children,
                                                        std::function<void()> gave_up);
  std::unique_ptr<node_agent> (*make_node_agent)();
  int (*run_node_proxy)(int sock, const std::string& address, const std::string& authkey);
  unsigned (*node_cpu_count)(const std::string& address, const std::string& authkey);
  int (*run_actor_link)(int sock, const std::string& node, const std::string& authkey, const std::string& request,
                        const std::string& way_back);
};

} // namespace multiproc::actors

// The plugin's entry, looked up by this name with dlsym. Never null.
#define MULTIPROC_ACTORS_PLUGIN_ENTRY "multiproc_actors_plugin"
extern "C" const multiproc::actors::plugin_table* multiproc_actors_plugin();
