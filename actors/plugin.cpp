#include "actors/plugin.hpp"

namespace {

constexpr multiproc::actors::plugin_table table{
    multiproc::actors::plugin_abi,
    multiproc::actors::make_pool_supervisor,
    multiproc::detail::manager::serve,
    multiproc::actors::make_supervisor,
    multiproc::actors::make_node_agent,
    multiproc::actors::run_node_proxy,
    multiproc::actors::node_cpu_count,
    multiproc::actors::run_actor_link,
};

} // namespace

extern "C" const multiproc::actors::plugin_table* multiproc_actors_plugin() { return &table; }
