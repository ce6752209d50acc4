// A whole program for what only a separate process can show about the plugins: test_pool.cpp
// runs it with LD_LIBRARY_PATH pointing at a directory that holds a copy of libmultiproc and no
// plugin. Pool and log_to_stderr must each fail with an ImportError that names the file they
// looked for; it prints one line per attempt.
#include <cstdio>
#include <functional>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

namespace {

void report(const char* what, const std::function<void()>& attempt) {
  try {
    attempt();
    std::printf("%s: loaded\n", what);
  } catch (const mp::ImportError& e) {
    std::printf("%s: ImportError: %s\n", what, e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  report("pool", [] { mp::Pool pool(1); });
  report("log", [] { mp::log_to_stderr(); });
  return 0;
}
