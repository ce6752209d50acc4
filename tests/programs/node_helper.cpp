// A program that can serve as a node: `node_helper --multiproc-node host:port` with the key in
// MULTIPROC_AUTHKEY (tests/test_node.cpp). mp::init serves and never returns then.
#include <cstdio>

#include "multiproc/multiproc.hpp"

namespace mp = multiproc;

int cube(int x) { return x * x * x; }
MULTIPROC_EXPORT(cube);

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::puts("not asked to serve a node");
  return 2;
}
