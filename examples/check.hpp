// How the examples verify themselves: a failed check throws, so the example dies with a message
// (in main) or exits with code 1 (in a child process, which the parent then checks), and its
// CTest test fails.
#pragma once

#include <stdexcept>
#include <string>

namespace example {

inline void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("check failed: " + what);
}

} // namespace example
