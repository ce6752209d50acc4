// Actors on nodes (ActorOptions::node), the CAF half: a link carries one connection to an actor
// between hosts as a byte stream, so that both ends keep speaking the local actor protocol.
//
// A link is two pipes, CAF brokers relaying bytes to each other over BASP: on the client host a
// link process (forked by the process that talks to the actor, framework/src/actor_node.cpp)
// relays its socketpair; on the node the agent's pipe relays a connection to the actor's own
// Unix socket. Each pipe monitors the other, so that a node that dies or is cut off (heartbeats)
// ends the link and the client sees the actor's end. The link that spawned an actor owns it: the
// actor is killed when that link ends before it, so no actor outlives its spawner.
//
// Internal to libmultiproc_actors (it includes CAF).
#pragma once

#include <string>
#include <vector>

#include <caf/all.hpp>

namespace multiproc::actors {

using actor_link_atom = caf::atom_constant<caf::atom("mp_alink")>;

// The node side of actor_link_atom: spawns the actor the request names (or connects to it) and
// answers (the node's pipe, the answer actor_node.hpp describes); the pipe is null on failure.
caf::result<caf::actor, std::vector<char>> open_actor_link(caf::event_based_actor* self, const caf::actor& client,
                                                           const std::vector<char>& request);

// Defined in node_agent.cpp, shared by both halves of nodes:
// An authenticated connection to the node at address (AuthenticationError, OSError).
int connect_node(const std::string& address, const std::string& authkey);
// BASP's client half on an authenticated connection: the node's published agent.
caf::actor basp_connect(caf::actor_system& sys, int fd, const std::string& address);
// The process's actor system for the rest of its life (link and proxy processes end with _exit).
caf::actor_system& lasting_system();

} // namespace multiproc::actors
