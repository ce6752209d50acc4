#include "lazy_library.hpp"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include "multiproc/errors.hpp"

namespace multiproc::detail {

void* open_library(const std::string& path, std::string_view needed_for) {
  void* library = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (library == nullptr)
    throw ImportError("cannot load " + path + " (" + std::string(needed_for) + " needs it): " + ::dlerror());
  return library;
}

void* library_symbol(void* library, const std::string& path, const char* name) {
  void* symbol = ::dlsym(library, name);
  if (symbol == nullptr) throw ImportError(path + " has no symbol " + name);
  return symbol;
}

std::string library_directory() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<const void*>(&library_directory), &info) == 0 || info.dli_fname == nullptr)
    throw ImportError("the directory libmultiproc was loaded from is unknown");
  std::string path = info.dli_fname;
  // A name found through a relative LD_LIBRARY_PATH entry is relative to the working directory.
  if (char resolved[PATH_MAX]; !path.starts_with('/') && ::realpath(path.c_str(), resolved)) path = resolved;
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

void check_plugin_abi(const std::string& path, std::uint32_t found, std::uint32_t expected) {
  if (found != expected)
    throw ImportError(path + " comes from another build of multiproc (plugin ABI " + std::to_string(found) +
                      ", expected " + std::to_string(expected) + ")");
}

} // namespace multiproc::detail
