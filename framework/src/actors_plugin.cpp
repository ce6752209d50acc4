#include "actors_plugin.hpp"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include <string>

#include "multiproc/errors.hpp"

namespace multiproc::detail {

namespace {

// libmultiproc's own directory, as the dynamic loader found it.
std::string library_directory() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<const void*>(&actors_plugin), &info) == 0 || info.dli_fname == nullptr)
    throw ImportError("cannot load " MULTIPROC_ACTORS_FILE_NAME ": the directory of libmultiproc is unknown");
  std::string path = info.dli_fname;
  // A name found through a relative LD_LIBRARY_PATH entry is relative to the working directory.
  if (char resolved[PATH_MAX]; path.front() != '/' && ::realpath(path.c_str(), resolved)) path = resolved;
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

const actors::plugin_table& load_plugin() {
  std::string path = library_directory() + "/" MULTIPROC_ACTORS_FILE_NAME;
  // NODELETE: actors, vtables and CAF's threads live as long as the process.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (handle == nullptr)
    throw ImportError("cannot load " + path + " (Pool and Manager need it): " + ::dlerror());
  auto* entry = reinterpret_cast<decltype(&multiproc_actors_plugin)>(::dlsym(handle, MULTIPROC_ACTORS_PLUGIN_ENTRY));
  if (entry == nullptr) throw ImportError(path + " is not multiproc's actor plugin: it has no " MULTIPROC_ACTORS_PLUGIN_ENTRY);
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
