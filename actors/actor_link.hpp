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
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>

#include "framework/src/actor_node.hpp"

namespace multiproc::actors {

using actor_link_atom = caf::atom_constant<caf::atom("mp_alink")>;

// The node side of actor_link_atom: spawns the actor the request names (or connects to it, or
// kills it) and answers with the node's pipe (null unless linked) and the answer actor_node.hpp
// describes. A link process runs it too, for requests a node routes back to its host: way_back
// is then the route (its own) that an actor it connects to packs refs in its answers along.
std::pair<caf::actor, detail::link_answer> open_actor_link(caf::io::middleman& mm, const caf::actor& client,
                                                           const detail::link_request& req,
                                                           const std::string& way_back = {});

// Defined in node_agent.cpp, shared by both halves of nodes:
// An authenticated connection to the node at address (AuthenticationError, OSError).
int connect_node(const std::string& address, const std::string& authkey);
// BASP's client half on an authenticated connection: the node's published agent.
caf::actor basp_connect(caf::actor_system& sys, int fd, const std::string& address);
// The process's actor system for the rest of its life (link and proxy processes end with _exit).
caf::actor_system& lasting_system();

} // namespace multiproc::actors
