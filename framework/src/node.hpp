// The node side of <multiproc/node.hpp> that mp::init needs.
#pragma once

namespace multiproc::detail {

// `--multiproc-node host:port` (or `--multiproc-node=host:port`) in argv: serves a node there
// and never returns. The authkey comes from the environment (MULTIPROC_AUTHKEY) or from the
// file MULTIPROC_AUTHKEY_FILE names, never from the command line (every user of the host can
// read it there). ValueError when neither is set or the option has no address.
void serve_node_if_asked(int argc, char** argv);

} // namespace multiproc::detail

#include <string>
#include <vector>

#include "multiproc/pool.hpp"

namespace multiproc::detail {

// The node of every remote worker slot of a pool: each of options.nodes, processes_per_node
// times (or as many times as that node has CPUs, asked of it in a short-lived child process,
// which also shows that the node is up and the key right). AuthenticationError on a wrong key,
// OSError when a node cannot be reached, ValueError on an empty authkey.
std::vector<std::string> node_slots(const PoolOptions& options);

// ValueError naming MULTIPROC_EXPORT unless fn is exported: only those run on a node.
void check_exported(erased_fn fn);

} // namespace multiproc::detail
