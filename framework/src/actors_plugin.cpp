#include "actors_plugin.hpp"

#include <string>

#include "lazy_library.hpp"
#include "multiproc/errors.hpp"

namespace multiproc::detail {

namespace {

const actors::plugin_table& load_plugin() {
  const std::string path = library_directory() + "/" MULTIPROC_ACTORS_FILE_NAME;
  void* plugin = open_library(path, "Pool and Manager");
  auto* entry = library_function<decltype(multiproc_actors_plugin)>(plugin, path, MULTIPROC_ACTORS_PLUGIN_ENTRY);
  const actors::plugin_table* table = entry();
  if (table->abi != actors::plugin_abi)
    throw ImportError(path + " comes from another build of multiproc (plugin ABI " + std::to_string(table->abi) +
                      ", expected " + std::to_string(actors::plugin_abi) + ")");
  return *table;
}

} // namespace

const actors::plugin_table& actors_plugin() {
  static const actors::plugin_table& table = load_plugin();
  return table;
}

} // namespace multiproc::detail
