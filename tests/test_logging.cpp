#include <catch2/catch.hpp>

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "multiproc/multiproc.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

// Each scenario runs in a child process whose stderr is a pipe, so that switching logging on
// never touches the test runner itself; the test reads back what the child printed.
namespace {

using Scenario = void (*)();

void run_with_stderr_to(int fd, Scenario scenario) {
  if (::dup2(fd, STDERR_FILENO) < 0) throw mp::SystemExit{90};
  ::close(fd);
  scenario();
}

std::string read_until_eof(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      FAIL("the child did not close its stderr in time; so far: " << out);
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::string stderr_of(Scenario scenario) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  mp::Process child(mp::ProcessOptions{"logged", {}}, run_with_stderr_to, fds[1], scenario);
  child.start();
  ::close(fds[1]);
  std::string out = read_until_eof(fds[0], 20s);
  ::close(fds[0]);
  REQUIRE(child.join(20s));
  REQUIRE(child.exitcode() == 0);
  return out;
}

void exit_with_three() { throw mp::SystemExit{3}; }

void start_and_join_a_child_exiting_with_three() {
  mp::Process p(exit_with_three);
  p.start();
  p.join();
}

void default_logging_scenario() {
  start_and_join_a_child_exiting_with_three();
  mp::get_logger().critical("nobody listens yet");
}

void info_logging_scenario() {
  mp::log_to_stderr(mp::LogLevel::info);
  start_and_join_a_child_exiting_with_three();
}

void level_filter_scenario() {
  auto& logger = mp::log_to_stderr(mp::LogLevel::warning);
  logger.info("below the level");
  logger.warning("at the level");
  logger.error("above the level");
}

void repeated_log_to_stderr_scenario() {
  mp::log_to_stderr();
  mp::log_to_stderr();
  mp::get_logger().warning("once");
}

} // namespace

TEST_CASE("logging: nothing is printed before log_to_stderr", "[logging]") {
  CHECK(stderr_of(default_logging_scenario).empty());
}

TEST_CASE("logging: after log_to_stderr(info) processes log their start and their exit code", "[logging]") {
  std::string out = stderr_of(info_logging_scenario);
  CHECK_THAT(out, Catch::Matches(R"(\[INFO/logged\] started Process-\d+:1 \(pid \d+\)\n)"
                                 R"(\[INFO/logged\] Process-\d+:1 \(pid \d+\) exited with exitcode 3\n)"));
}

TEST_CASE("logging: messages below the level are dropped, the others printed as Python prints them", "[logging]") {
  std::string out = stderr_of(level_filter_scenario);
  CHECK(out == "[WARNING/logged] at the level\n[ERROR/logged] above the level\n");
}

TEST_CASE("logging: log_to_stderr called twice still prints each line once; the default level is warning",
          "[logging]") {
  CHECK(stderr_of(repeated_log_to_stderr_scenario) == "[WARNING/logged] once\n");
  CHECK(mp::get_logger().level() == mp::LogLevel::warning);
}

TEST_CASE("logging: is_enabled_for is false while there is no handler", "[logging]") {
  CHECK_FALSE(mp::get_logger().is_enabled_for(mp::LogLevel::critical));
}
