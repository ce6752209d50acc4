// Shared by test_pool.cpp and test_managers.cpp: runs programs/thread_limit_helper, which starts a
// Pool or a Manager under RLIMIT_NPROC limits of 1 to 12 tasks and then without one, and checks
// what it printed (see the helper): each start either works or throws OSError, never hangs or
// aborts, fails at 4 tasks (too few for the actor runtime's threads), and works again once the
// limit is lifted.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

namespace multiproc_test {

inline void check_starts_at_thread_limits(const std::string& mode) {
  // timeout: a start that wedges must fail the test, not hang it.
  std::string command = "timeout 60 " MULTIPROC_TEST_PROGRAMS_DIR "/thread_limit_helper " + mode + " 2>&1";
  FILE* out = ::popen(command.c_str(), "r");
  REQUIRE(out);
  std::string output;
  char buf[512];
  while (std::fgets(buf, sizeof buf, out)) output += buf;
  int status = ::pclose(out);
  INFO(output);
  if (output.rfind("skipped:", 0) == 0) {
    WARN("not run: " << output);
    return;
  }
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  std::istringstream lines(output);
  int attempts = 0;
  for (std::string line; std::getline(lines, line); ++attempts) {
    auto space = line.find(' ');
    REQUIRE(space != std::string::npos);
    auto outcome = line.substr(space + 1);
    CHECK((outcome == "ok" || outcome.rfind("OSError: ", 0) == 0));
    if (line.rfind("4 ", 0) == 0) CHECK(outcome.rfind("OSError: ", 0) == 0);
  }
  CHECK(attempts == 13);
  CHECK(output.find("\nunlimited ok\n") != std::string::npos);
}

}  // namespace multiproc_test
