#include "multiproc/logging.hpp"

#include <climits>
#include <mutex>
#include <string>

#include "launch.hpp"
#include "lazy_library.hpp"
#include "log.hpp"
#include "framework/plugins/log_plugin.hpp"

namespace multiproc {

namespace detail {

std::atomic<int> log_threshold{INT_MAX};

namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::warning)};
bool g_to_stderr = false;
std::mutex g_config_mutex;  // serializes the writers of the three values above

void update_threshold() {
  log_threshold.store(g_to_stderr ? g_level.load() : INT_MAX, std::memory_order_release);
}

std::string_view level_name(LogLevel level) {
  switch (level) {
    case LogLevel::subdebug: return "SUBDEBUG";
    case LogLevel::debug: return "DEBUG";
    case LogLevel::info: return "INFO";
    case LogLevel::subwarning: return "SUBWARNING";
    case LogLevel::warning: return "WARNING";
    case LogLevel::error: return "ERROR";
    case LogLevel::critical: return "CRITICAL";
  }
  return "LEVEL";
}

// libmultiproc_log, loaded when the log is first switched on (log_plugin.hpp).
const log_plugin_table& log_plugin() {
  static const auto& table =
      load_plugin<log_plugin_table>(MULTIPROC_LOG_FILE_NAME, MULTIPROC_LOG_PLUGIN_ENTRY, log_plugin_abi, "log_to_stderr");
  return table;
}

} // namespace

void write_log_line(LogLevel level, std::string_view message) {
  auto line = fmt::format("[{}/{}] {}", level_name(level), self_info().name, message);
  log_plugin().write_line(level, line);
}

} // namespace detail

void Logger::set_level(LogLevel level) {
  std::lock_guard lock(detail::g_config_mutex);
  detail::g_level.store(static_cast<int>(level));
  detail::update_threshold();
}

LogLevel Logger::level() const { return static_cast<LogLevel>(detail::g_level.load()); }

bool Logger::is_enabled_for(LogLevel level) const { return detail::log_enabled(level); }

void Logger::log(LogLevel level, std::string_view message) {
  if (detail::log_enabled(level)) detail::write_log_line(level, message);
}

Logger& get_logger() {
  static Logger logger;
  return logger;
}

Logger& log_to_stderr(std::optional<LogLevel> level) {
  detail::log_plugin();  // loaded before any thread can see the handler switched on
  std::lock_guard lock(detail::g_config_mutex);
  if (level) detail::g_level.store(static_cast<int>(*level));
  detail::g_to_stderr = true;
  detail::update_threshold();
  return get_logger();
}

} // namespace multiproc
