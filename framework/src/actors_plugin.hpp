// libmultiproc_actors, the CAF-based half of the library (actors/plugin.hpp), loaded on first use
// (lazy_library.hpp).
#pragma once

#include "actors/plugin.hpp"

namespace multiproc::detail {

// The plugin's table. The first call loads libmultiproc_actors from the directory libmultiproc was
// loaded from; it throws ImportError, naming the path it tried, when the plugin is missing or from
// another build (and the next call tries again). Thread-safe.
// Call it in the parent before forking a child that will need the plugin: a child forked from a
// multithreaded process must not dlopen (another thread may have held the loader's lock).
const actors::plugin_table& actors_plugin();

} // namespace multiproc::detail
