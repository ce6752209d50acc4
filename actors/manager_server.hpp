// The manager's server: a fresh CAF actor system (never one inherited through fork) with one
// actor per shared object, behind a listener where every connection must pass the authkey's
// HMAC challenge before a single byte of it is read as a request.
//
// Sessions live on the actor runtime, not on threads of their own: the listening loop (the
// caller's thread) accepts without ever waiting and hands each connection to a broker on the
// middleman's multiplexer, which runs the handshake (one deadline for all of it) and then reads
// the framed requests, answers server-level ones (create, shutdown) itself and sends object calls
// to the object's actor. A built-in object's actor runs right there on the multiplexer thread, so
// its reply goes out in the same round; parked calls (a queue get, a lock acquire) cost memory,
// not a thread. An idle connection is a broker and a socket: 1,000 of them add no thread.
// A session that ends (Server::session_ended) tells every object, so locks its client held are
// released, its parked calls abandoned and the items it held of a JoinableQueue written off.
// Objects are reference counted per session (create, decref, and the transit tokens that carry a
// reference from one process to another: transit, claim, claim_all); a session's end gives back
// the references it held, and an object nobody holds is freed, its actor ended. A shared typeid's
// object lives as long as the server.
// This header is CAF-free: the library's manager code (framework/src) calls serve() in the
// server process.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "multiproc/detail/manager_registry.hpp"

namespace multiproc::detail::manager {

struct ServerConfig {
  std::string address;  // Unix socket path or "host:port" ("host:0": any free port)
  std::string authkey;
  std::shared_ptr<const TypeidRegistry> typeids;
  int owner_fd = -1;  // if set: becomes readable (EOF) when the server's owner is gone; it stops
};

// Listens, then calls ready(bound address) and serves until a client asks it to shut down.
// Throws (before ready) when it cannot listen. On return every thread, actor, connection and the
// listening socket are gone.
void serve(const ServerConfig& config, const std::function<void(const std::string&)>& ready);

} // namespace multiproc::detail::manager
