// Shared libraries the library loads on first use instead of linking them: a program maps them
// only once it uses what needs them. Every mapping a program carries makes each of its forks
// slower (fork copies the mappings and their page tables; bench/RESULTS.md, process_start_join).
//
// Load them in the parent before forking a child that will need them, where that can be known: a
// child forked from a multithreaded process should not dlopen (another thread may have been inside
// the dynamic loader at the fork).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace multiproc::detail {

// dlopen for good (never unloaded), every symbol bound now. ImportError naming the path, what
// needs it and the loader's reason when it cannot be loaded.
void* open_library(const std::string& path, std::string_view needed_for);

// The address of `name` in a library from open_library; ImportError naming both when it is missing.
void* library_symbol(void* library, const std::string& path, const char* name);

template <class Function>
Function* library_function(void* library, const std::string& path, const char* name) {
  return reinterpret_cast<Function*>(library_symbol(library, path, name));
}

// The directory libmultiproc was loaded from: its plugins are installed next to it.
std::string library_directory();

// ImportError unless a plugin's table has the layout this build expects.
void check_plugin_abi(const std::string& path, std::uint32_t found, std::uint32_t expected);

// Loads one of multiproc's plugins (file_name, next to libmultiproc) and returns the table its
// extern "C" entry returns; the table's first member is its abi.
template <class Table>
const Table& load_plugin(const char* file_name, const char* entry, std::uint32_t abi, std::string_view needed_for) {
  const std::string path = library_directory() + "/" + file_name;
  void* plugin = open_library(path, needed_for);
  const Table* table = library_function<const Table*()>(plugin, path, entry)();
  check_plugin_abi(path, table->abi, abi);
  return *table;
}

} // namespace multiproc::detail
