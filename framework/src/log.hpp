// The library's own log calls: detail::log(LogLevel::info, "{} started", name). While logging is
// off (the default) a call costs one relaxed atomic load and formats nothing.
#pragma once

// fmt is compiled into the libraries (header-only) and kept out of their exported symbols: the log
// plugin's spdlog brings libfmt.so along, which must not meet a second, exported copy.
#pragma GCC visibility push(hidden)
#include <fmt/format.h>
#pragma GCC visibility pop

#include <atomic>
#include <string_view>
#include <utility>

#include "multiproc/logging.hpp"

namespace multiproc::detail {

// The lowest level printed right now: above every level until log_to_stderr() adds the handler.
extern std::atomic<int> log_threshold;

inline bool log_enabled(LogLevel level) noexcept {
  return static_cast<int>(level) >= log_threshold.load(std::memory_order_relaxed);
}

// Prints "[LEVEL/<this process's name>] message" as one line; no level check.
void write_log_line(LogLevel level, std::string_view message);

template <class... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (log_enabled(level)) write_log_line(level, fmt::format(format, std::forward<Args>(args)...));
}

} // namespace multiproc::detail
