// Nodes over CAF's network layer (BASP), behind the authkey handshake (notes/caf-0.17.md, ex9:
// BASP authenticates nobody, so no byte reaches it before the HMAC challenge passed).
//
// Node side: the node agent, a CAF actor that every authenticated connection of serve_node
// publishes. A remote pool's proxy opens a session on it; the session is a broker in the node
// that owns one local pool worker (pool_worker.hpp, forked by the agent) and relays chunks to it
// by exported name and answers back.
//
// Pool side: a node proxy, a process the pool starts in a worker slot like a local worker. It
// speaks the local worker protocol on its socketpair, so the pool's dispatch, windows, WorkerLost
// and restarts work unchanged, and relays each chunk to its session on the node. It exits (the
// pool sees a lost worker) when the node dies or is cut off (heartbeats, at most 5 s).
//
// This header is CAF-free.
#pragma once

#include <memory>
#include <string>

namespace multiproc::actors {

// The first frame a node proxy sends its pool: the session on the node is open, chunks may come.
inline constexpr char node_ready_frame = 0x7f;
// The exit code of a proxy whose node was lost, after it reported why on stderr.
inline constexpr int node_lost_exit = 3;

class node_agent {
public:
  node_agent() = default;
  virtual ~node_agent() = default;
  node_agent(const node_agent&) = delete;
  node_agent& operator=(const node_agent&) = delete;
  // Speaks BASP on fd, a connection that passed the handshake (the agent owns it).
  virtual void adopt(int fd) = 0;
};

// The agent of this process (in libmultiproc_actors, through the plugin table).
std::unique_ptr<node_agent> make_node_agent();

// The body of a node proxy process: relays chunks between the pool on sock and a session on the
// node at address until the pool closes sock (0) or the node is lost (node_lost_exit). While the
// node cannot be reached it retries, and sends node_ready_frame once connected. Throws
// AuthenticationError on a wrong key.
int run_node_proxy(int sock, const std::string& address, const std::string& authkey);

// The body of an actor link process (framework/src/actor_node.hpp): connects to the node, sends
// it the packed link_request, writes the node's link_answer as one frame on sock, then relays sock
// to the actor until either end closes or the node is lost. way_back ("node!route", or "") is
// the route the request proposed: this process serves what the node sends along it.
int run_actor_link(int sock, const std::string& node, const std::string& authkey, const std::string& request,
                   const std::string& way_back);

// The number of CPUs of the node at address (its default processes_per_node). Builds a fresh
// actor system: call it in a child process of its own. AuthenticationError on a wrong key,
// OSError when the node cannot be reached.
unsigned node_cpu_count(const std::string& address, const std::string& authkey);

} // namespace multiproc::actors
