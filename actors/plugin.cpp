#include "actors/plugin.hpp"

namespace {

constexpr multiproc::actors::plugin_table table{
    multiproc::actors::plugin_abi,
    multiproc::actors::make_pool_supervisor,
    multiproc::detail::manager::serve,
    multiproc::actors::make_supervisor,
};

} // namespace

extern "C" const multiproc::actors::plugin_table* multiproc_actors_plugin() { return &table; }
