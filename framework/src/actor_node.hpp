// Actors on nodes, what both halves agree on (CAF-free): how a link process asks the node for an
// actor and what it answers, and how this process reaches an actor on a node.
//
// A remote ActorRef's address is the node's address, '/', then the actor's address on the node
// ("10.0.0.2:7000/@multiproc-actor-..."); its pid is the actor's pid there.
//
// The way back: a ref of this host's actor packed for an actor on a node (route_scope) becomes
// "node!route/@address", route naming (randomly, chosen by this process) the link this process
// holds to that node. An actor on the
// node reaches it through its own node, which passes the request along that link to its link
// process here, which connects to the actor as the node would connect to one of its own.
#pragma once

#include <exception>
#include <string>
#include <string_view>

#include "multiproc/actor.hpp"

namespace multiproc::detail {

struct link_request {
  int kind = 0;        // 's': spawn init(args) under name; 'c': connect to address; 'k': kill
  std::string target;  // the name ('s') or the actor's address on the node ('c')
  std::string init;    // 's': the exported name of the actor's init
  std::string args;    // 's': its arguments, packed as one array
  int pid = 0;         // 'k': kill the actor at address target, whose pid this is
  std::string route;     // 'c', 'k': the actor is on the host of that route's link, not on the node
  std::string way_back;  // 's', 'c': the route this link is to be, for refs of the client's host
  MSGPACK_DEFINE(kind, target, init, args, pid, route, way_back);
};

struct link_answer {
  int kind = 'e';  // 'k': linked; 'x': the actor has ended; else an error, as error_answer makes
  std::string message;
  int pid = 0;
  std::string address;  // the actor's address on the node
  MSGPACK_DEFINE(kind, message, pid, address);
};

// The answer for the exception being handled (AuthenticationError 'a', ValueError 'v', OSError
// 'o', any other 'e').
link_answer error_answer(std::exception_ptr error);

// Whether address names an actor on a node; its node's part and its address there.
bool is_remote_address(std::string_view address);
std::string_view node_of(std::string_view address);
std::string_view address_on_node(std::string_view address);

// A connection to the actor on a node that ref names (through a link process of this process,
// which the returned peer owns), or nullptr when the actor has ended. The node's key is the one
// given to spawn for that node in this process or its fork ancestors, else MULTIPROC_AUTHKEY.
std::shared_ptr<class actor_peer> connect_remote(const ActorRef& ref);

// SIGKILLs the actor on a node that ref names, if it still runs there.
void kill_on_node(const ActorRef& ref);

// In a node's process, before it spawns anything: the node's own address and key, which its
// actors (and their children) use to reach refs routed through it ("node!route/@address").
void set_home_node(const std::string& address, const std::string& authkey);

} // namespace multiproc::detail
