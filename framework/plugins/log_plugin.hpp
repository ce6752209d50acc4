// The boundary between libmultiproc and libmultiproc_log, the plugin that writes the library's log
// through spdlog. libmultiproc loads it with dlopen (lazy_library.hpp) when log_to_stderr() first
// switches the log on, so that a program that never logs maps neither spdlog nor libfmt: every
// mapping makes each fork slower (bench/RESULTS.md, process_start_join). spdlog-free.
#pragma once

#include <cstdint>
#include <string_view>

#include "multiproc/logging.hpp"

namespace multiproc::detail {

// Changes whenever the table changes shape: a plugin from another build is refused.
inline constexpr std::uint32_t log_plugin_abi = 1;

struct log_plugin_table {
  std::uint32_t abi;
  // Writes one formatted line ("[LEVEL/process] message", no newline) to stderr at that level.
  // Thread-safe; never throws.
  void (*write_line)(LogLevel level, std::string_view line);
};

} // namespace multiproc::detail

// The plugin's entry, looked up by this name with dlsym. Never null.
#define MULTIPROC_LOG_PLUGIN_ENTRY "multiproc_log_plugin"
extern "C" const multiproc::detail::log_plugin_table* multiproc_log_plugin();
