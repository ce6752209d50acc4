// mp::get_logger() and mp::log_to_stderr() — Python's multiprocessing logging: one library
// logger, silent until log_to_stderr() gives it a handler.
//
// The library reports its lifecycle through this logger: processes started and exited (with the
// exit code), pool workers replaced (with the reason), pools closed or terminated, managers started
// and stopped, failed authentications. Lines look like Python's: "[INFO/Process-1] ...".
// Levels carry Python's numbers (DEBUG 10, INFO 20, ...). The default level is WARNING, as in
// Python, but nothing is printed at all before log_to_stderr(). A forked child inherits the
// logger's level and handler, as it does in Python.
// Thread- and fork-safe: every line is a single write(2) to stderr, so lines from threads and
// processes never interleave, and a child never inherits a held lock. The logger lives for the
// whole program; there is nothing to destroy.
#pragma once

#include <optional>
#include <string_view>

namespace multiproc {

enum class LogLevel : int {
  subdebug = 5,
  debug = 10,
  info = 20,
  subwarning = 25,
  warning = 30,
  error = 40,
  critical = 50,
};

// The library's logger (Python's logging.getLogger('multiprocessing')); a process-wide singleton.
class Logger {
public:
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  void set_level(LogLevel level);  // Python's setLevel
  LogLevel level() const;
  // Whether a message at this level would be printed (a handler exists and the level passes).
  bool is_enabled_for(LogLevel level) const;

  void log(LogLevel level, std::string_view message);
  void subdebug(std::string_view message) { log(LogLevel::subdebug, message); }
  void debug(std::string_view message) { log(LogLevel::debug, message); }
  void info(std::string_view message) { log(LogLevel::info, message); }
  void subwarning(std::string_view message) { log(LogLevel::subwarning, message); }
  void warning(std::string_view message) { log(LogLevel::warning, message); }
  void error(std::string_view message) { log(LogLevel::error, message); }
  void critical(std::string_view message) { log(LogLevel::critical, message); }

private:
  Logger() = default;
  friend Logger& get_logger();
};

// The library's logger, without a handler unless log_to_stderr() was called.
Logger& get_logger();
// Sends the library's log to stderr (once, however often it is called) and, given a level, sets
// it. Returns the logger, as Python does. The first call loads libmultiproc_log, installed next to
// libmultiproc: ImportError if it cannot (call it before forking children that should log).
Logger& log_to_stderr(std::optional<LogLevel> level = {});

} // namespace multiproc
