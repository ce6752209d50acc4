// libmultiproc_log: the library's log lines, written through spdlog (log_plugin.hpp).
#include "log_plugin.hpp"

#include <spdlog/logger.h>
#include <spdlog/sinks/sink.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

namespace {

using multiproc::LogLevel;

// Writes each formatted line with one write(2): lines from threads and processes never
// interleave, and there is no lock a forked child could inherit held.
class StderrLineSink final : public spdlog::sinks::sink {
public:
  void log(const spdlog::details::log_msg& msg) override {
    std::string line(msg.payload.data(), msg.payload.size());
    line += '\n';
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(STDERR_FILENO, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // stderr is gone: a log line is not worth failing the caller over
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  void flush() override {}
  void set_pattern(const std::string&) override {}
  void set_formatter(std::unique_ptr<spdlog::formatter>) override {}
};

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::subdebug: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info:
    case LogLevel::subwarning: return spdlog::level::info;
    case LogLevel::warning: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
    case LogLevel::critical: return spdlog::level::critical;
  }
  return spdlog::level::info;
}

// Level filtering happens in libmultiproc (with Python's numbering), so the spdlog logger passes
// everything to its sink. Built when the plugin is loaded, before the log is switched on; never
// destroyed: children and atexit hooks log.
spdlog::logger& stderr_logger() {
  static auto* logger = [] {
    auto* l = new spdlog::logger("multiprocessing", std::make_shared<StderrLineSink>());
    l->set_level(spdlog::level::trace);
    return l;
  }();
  return *logger;
}

// spdlog's logger catches what its sink throws (and reports it on stderr itself).
void write_line(LogLevel level, std::string_view line) { stderr_logger().log(to_spdlog(level), line); }

const multiproc::detail::log_plugin_table table{multiproc::detail::log_plugin_abi, write_line};

} // namespace

extern "C" const multiproc::detail::log_plugin_table* multiproc_log_plugin() {
  stderr_logger();
  return &table;
}
