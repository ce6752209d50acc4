// The manager's server: a fresh CAF actor system (never one inherited through fork) with one
// actor per shared object, behind a listener where every connection must pass the authkey's
// HMAC challenge before a single byte of it is read as a request.
//
// Each authenticated connection (a client thread) gets a session thread that reads its framed
// requests, answers server-level ones (create, shutdown) itself and sends object calls to the
// object's actor, which writes the reply straight back to the connection. The session thread is
// also a CAF execution unit, so an idle actor woken by its call runs right there, without a
// hand-off to a scheduler thread; the actor's mailbox still serializes all calls on the object.
// A session that ends tells every object, so locks its client held are released and its parked
// calls abandoned.
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
// Throws (before ready) when it cannot listen. On return every thread, actor and the listening
// socket are gone.
void serve(const ServerConfig& config, const std::function<void(const std::string&)>& ready);

} // namespace multiproc::detail::manager
