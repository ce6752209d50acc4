// Catch2's main, after mp::init: a test that starts children by spawn or forkserver re-runs this
// program, whose mp::init runs the child's work instead of the tests. Catch's fatal-signal
// handlers stay off: forked children inherit every handler, so a
// child ended by SIGTERM (Process::terminate, a Manager's shutdown) or crashing on purpose ran
// Catch's reporter, in a signal handler, and printed a failed test that never failed. Each
// TEST_CASE is a CTest test of its own, so CTest already names the test a real crash ends (and
// under ASan the sanitizer's report says where).
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#include <catch2/catch.hpp>

#include <multiproc/process.hpp>

int main(int argc, char** argv) {
  multiproc::init(argc, argv);
  return Catch::Session().run(argc, argv);
}
