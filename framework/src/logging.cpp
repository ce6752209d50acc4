#include "multiproc/logging.hpp"

#include <spdlog/logger.h>
#include <spdlog/sinks/sink.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <memory>
#include <mutex>
#include <string>

#include "launch.hpp"
#include "log.hpp"

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

// Level filtering happens before we get here (log_threshold, with Python's numbering), so the
// spdlog logger passes everything to its sink. Never destroyed: children and atexit hooks log.
spdlog::logger& stderr_logger() {
  static auto* logger = [] {
    auto* l = new spdlog::logger("multiprocessing", std::make_shared<StderrLineSink>());
    l->set_level(spdlog::level::trace);
    return l;
  }();
  return *logger;
}

} // namespace

void write_log_line(LogLevel level, std::string_view message) {
  auto line = fmt::format("[{}/{}] {}", level_name(level), self_info().name, message);
  stderr_logger().log(to_spdlog(level), std::string_view(line));
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
  detail::stderr_logger();  // built before any thread can see the handler switched on
  std::lock_guard lock(detail::g_config_mutex);
  if (level) detail::g_level.store(static_cast<int>(*level));
  detail::g_to_stderr = true;
  detail::update_threshold();
  return get_logger();
}

} // namespace multiproc
