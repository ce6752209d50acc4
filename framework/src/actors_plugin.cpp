#include "actors_plugin.hpp"

#include "lazy_library.hpp"

namespace multiproc::detail {

const actors::plugin_table& actors_plugin() {
  static const auto& table = load_plugin<actors::plugin_table>(MULTIPROC_ACTORS_FILE_NAME, MULTIPROC_ACTORS_PLUGIN_ENTRY,
                                                               actors::plugin_abi, "Pool, Manager and Supervisor");
  return table;
}

} // namespace multiproc::detail
