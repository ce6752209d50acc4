// Nodes: Pool workers on other hosts (CPython has no such thing; its BaseManager job queue is the
// usual stand-in). A node is any program of yours that calls mp::serve_node (or runs with
// --multiproc-node host:port, see mp::init); a Pool with PoolOptions::nodes runs workers there.
//
// Only functions marked MULTIPROC_EXPORT run on another host, found there by name (the node runs
// its own build of the program, so an address means nothing there); submitting another one to a
// pool with nodes is ValueError naming the macro. Arguments and results cross as MessagePack, as
// everywhere.
//
// Security: a node accepts a connection only after CPython's HMAC authkey challenge in both
// directions (as Listener/Client with an authkey); a wrong key is AuthenticationError on the
// client and the node keeps serving. Behind the handshake the link is CAF's own network layer
// (BASP), unencrypted: anyone holding the key runs your exported functions on that host. Keep
// the key out of command lines.
#pragma once

#include <functional>
#include <string>

#include "multiproc/detail/export_registry.hpp"

#define MULTIPROC_EXPORT_CONCAT_INNER(a, b) a##b
#define MULTIPROC_EXPORT_CONCAT(a, b) MULTIPROC_EXPORT_CONCAT_INNER(a, b)

// At namespace scope, after the function: `function` may run on other hosts, under its name as
// written here (write it the same way in every program that serves or submits it).
#define MULTIPROC_EXPORT(function)                                                         \
  [[maybe_unused]] static const bool MULTIPROC_EXPORT_CONCAT(multiproc_exported_, __LINE__) = \
      ::multiproc::detail::export_function<&function>(#function)

namespace multiproc {

// Serves pool workers for remote supervisors on "host:port" ("0.0.0.0:7000", "127.0.0.1:0" for
// any port) until the process is killed; every connection first passes the authkey handshake.
// OSError when the address cannot be bound, ValueError on an empty authkey.
void serve_node(std::string address, std::string authkey);
// As above; `ready` is called once with the bound address ("127.0.0.1:40123") when the node
// accepts connections.
void serve_node(std::string address, std::string authkey, const std::function<void(const std::string&)>& ready);

} // namespace multiproc
