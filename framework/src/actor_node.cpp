// Actors on nodes, this process's half: spawning one (ActorOptions::node) and reaching one, each
// through a link process that relays a socketpair to the actor over the node's BASP connection
// (actors/actor_link.hpp). The socketpair then carries the local actor protocol unchanged, so
// every ActorRef operation works on it as on a local actor's socket.
#include "actor_node.hpp"

#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "actor_peer.hpp"
#include "actor_socket.hpp"
#include "actors_plugin.hpp"
#include "crypto.hpp"
#include "launch.hpp"
#include "multiproc/detail/export_registry.hpp"

namespace multiproc::detail {

namespace {

constexpr std::string_view node_separator = "/@";
constexpr char route_separator = '!';

struct node_keys {
  std::mutex m;
  std::map<std::string, std::string> by_node;
  std::set<std::string> own_routes;  // "node!route" of the links this process (or an ancestor) opened
  std::string home_address;          // set in a node's process: the node itself
  std::string home_key;
};

node_keys& keys() {
  static auto* k = new node_keys;  // never destroyed: forked children inherit and use it
  return *k;
}

void remember_key(const std::string& node, const std::string& authkey) {
  auto& k = keys();
  std::lock_guard lk(k.m);
  k.by_node[node] = authkey;
}

std::string key_for(const std::string& node) {
  {
    auto& k = keys();
    std::lock_guard lk(k.m);
    if (auto it = k.by_node.find(node); it != k.by_node.end()) return it->second;
  }
  if (const char* key = std::getenv("MULTIPROC_AUTHKEY"); key && *key) return key;
  {
    auto& k = keys();
    std::lock_guard lk(k.m);
    if (!k.home_key.empty()) return k.home_key;  // an actor of a node: its own node's key
  }
  throw ValueError("no authkey is known for node " + node +
                   ": spawn an actor there from this process (or an ancestor it was forked from), or set "
                   "MULTIPROC_AUTHKEY");
}

[[noreturn]] void raise_answer(const link_answer& a, const std::string& node) {
  std::string what = "node " + node + ": " + a.message;
  switch (a.kind) {
  case 'a': throw AuthenticationError(what);
  case 'v': throw ValueError(what);
  case 'o': throw OSError(what, EHOSTUNREACH);
  default: throw Error(what);
  }
}

struct link {
  int fd = -1;     // this process's end, relayed to the actor
  int pidfd = -1;  // the link process
  link_answer answer;
};

void close_link(link& l) {
  if (l.fd >= 0) {
    unregister_internal_fd(l.fd);
    ::close(l.fd);
  }
  try_reap(l.pidfd, true);
  unregister_internal_fd(l.pidfd);
  ::close(l.pidfd);
}

// Starts a link process for req and reads the node's answer. The process ends when this end
// closes or the link breaks; PR_SET_PDEATHSIG is off so that it does not end with the thread that
// happened to open it.
link open_link(const std::string& node, const std::string& authkey, const link_request& req,
               const std::string& way_back_route) {
  const auto& plugin = actors_plugin();
  crypto();  // before the fork: the link process authenticates
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw OSError(std::string("socketpair failed: ") + std::strerror(errno), errno);
  register_internal_fd(sv[0]);
  register_internal_fd(sv[1]);
  auto request = encode(req);
  link l;
  l.fd = sv[0];
  Forked child;
  try {
    child = fork_child({"ActorLink", true, next_child_identity()},
                       [&] {
                         ::prctl(PR_SET_PDEATHSIG, 0);
                         return plugin.run_actor_link(sv[1], node, authkey, request, way_back_route);
                       },
                       {sv[1]});
  } catch (...) {
    for (int fd : sv) {
      unregister_internal_fd(fd);
      ::close(fd);
    }
    throw;
  }
  unregister_internal_fd(sv[1]);
  ::close(sv[1]);
  l.pidfd = child.pidfd;
  try {
    l.answer = decode<link_answer>(read_payload(l.fd, read_frame_header(l.fd)));
  } catch (const Error&) {
    close_link(l);
    throw Error("node " + node + ": the actor link process ended without an answer");
  }
  return l;
}

// A fresh name for a link's way back (16 hex digits): unguessable, so that only holders of a ref
// routed along it can use it.
std::string new_way_back() {
  std::uint64_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r) throw OSError(std::string("getrandom failed: ") + std::strerror(errno), errno);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(r));
  return hex;
}

std::string route_name(const std::string& node, const std::string& way_back) {
  return node + route_separator + way_back;
}

// The link's way back is this process's own: refs routed along it come back as this host's.
void remember_route(const std::string& route) {
  auto& k = keys();
  std::lock_guard lk(k.m);
  k.own_routes.insert(route);
}

std::shared_ptr<actor_peer> peer_on(link& l, const ActorRef& ref, std::string route) {
  unregister_internal_fd(l.fd);  // the peer registers it as its own
  auto peer = std::make_shared<actor_peer>(l.fd, ref);
  peer->own_link(l.pidfd, std::move(route));
  return peer;
}

// Where a link to the actor at a remote address goes, with what key, and the request's route:
// an address routed back to another host ("node!route/@...") is reached through the node, which
// for an actor of that node is the node it runs on. `spelled` is the node as the address names
// it, which the link's own way back is named after.
struct link_target {
  std::string node;
  std::string authkey;
  std::string route;
  std::string spelled;
};

link_target target_of(const ActorRef& ref) {
  std::string_view node = node_of(ref.address());
  auto bang = node.find(route_separator);
  std::string spelled(node.substr(0, bang));
  if (bang == std::string_view::npos) return {spelled, key_for(spelled), "", spelled};
  std::string route(node.substr(bang + 1));
  {
    auto& k = keys();
    std::lock_guard lk(k.m);
    if (!k.home_address.empty()) return {k.home_address, k.home_key, std::move(route), std::move(spelled)};
  }
  return {spelled, key_for(spelled), std::move(route), spelled};
}

// While a route_scope lives on this thread: the route packed refs of this host's actors take.
thread_local const std::string* current_route = nullptr;

} // namespace

link_answer error_answer(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const AuthenticationError& e) {
    return {'a', e.what(), 0, ""};
  } catch (const ValueError& e) {
    return {'v', e.what(), 0, ""};
  } catch (const OSError& e) {
    return {'o', e.what(), 0, ""};
  } catch (const std::exception& e) {
    return {'e', e.what(), 0, ""};
  }
}

bool is_remote_address(std::string_view address) { return address.find(node_separator) != std::string_view::npos; }
std::string_view node_of(std::string_view address) { return address.substr(0, address.find(node_separator)); }
std::string_view address_on_node(std::string_view address) {
  return address.substr(address.find(node_separator) + 1);
}

std::shared_ptr<actor_peer> connect_remote(const ActorRef& ref) {
  auto to = target_of(ref);
  auto way_back = new_way_back();
  auto route = route_name(to.spelled, way_back);
  auto l = open_link(to.node, to.authkey,
                     {'c', std::string(address_on_node(ref.address())), "", "", 0, to.route, way_back}, route);
  if (l.answer.kind == 'k') {
    remember_route(route);
    return peer_on(l, ref, std::move(route));
  }
  close_link(l);
  if (l.answer.kind == 'x') return nullptr;
  raise_answer(l.answer, to.node);
}

void kill_on_node(const ActorRef& ref) {
  auto to = target_of(ref);
  auto l = open_link(to.node, to.authkey,
                     {'k', std::string(address_on_node(ref.address())), "", "", ref.pid(), to.route, ""}, "");
  close_link(l);
}

void set_home_node(const std::string& address, const std::string& authkey) {
  // A node bound to every interface reaches itself on loopback.
  auto colon = address.rfind(':');
  std::string_view host = std::string_view(address).substr(0, colon);
  std::string home = address;
  if (host == "0.0.0.0") home = "127.0.0.1" + address.substr(colon);
  if (host == "[::]" || host == "::") home = "[::1]" + address.substr(colon);
  auto& k = keys();
  std::lock_guard lk(k.m);
  k.home_address = std::move(home);
  k.home_key = authkey;
}

ActorRef spawn_on_node(const ActorOptions& options, erased_fn init, const std::function<std::string()>& pack_args) {
  const auto* entry = find_export(init);
  if (!entry || !entry->actor)
    throw ValueError("an actor on a node runs only an init marked MULTIPROC_EXPORT(function): export it (at "
                     "namespace scope, in the program the node runs too)");
  if (options.authkey.empty())
    throw ValueError("an actor on a node needs ActorOptions::authkey: nodes never accept a connection without it");
  if (!options.name.empty()) actor_name_address(options.name);  // ValueError on a bad name, before any fork
  remember_key(options.node, options.authkey);
  auto way_back = new_way_back();
  auto route = route_name(options.node, way_back);
  remember_route(route);
  std::string args;
  {
    route_scope scope(route);
    args = pack_args();
  }
  auto l = open_link(options.node, options.authkey, {'s', options.name, entry->name, std::move(args), 0, "", way_back},
                     route);
  if (l.answer.kind != 'k') {
    close_link(l);
    raise_answer(l.answer, options.node);
  }
  auto ref = actor_ref_access::make(options.name, l.answer.pid, options.node + "/" + l.answer.address);
  adopt_peer(peer_on(l, ref, std::move(route)));
  return ref;
}

namespace {

// The route of this process's link to `to`, an actor on a node; "" for one of this host.
std::string route_to(const ActorRef& to) {
  if (!is_remote_address(to.address())) return {};
  auto peer = peer_for(to);
  return peer ? peer->route() : std::string();
}

} // namespace

route_scope::route_scope(const ActorRef& to) : route_scope(route_to(to)) {}

route_scope::route_scope(const std::string& route) : previous_(current_route) {
  if (route.empty()) return;
  route_ = route + "/";
  current_route = &route_;
}

route_scope::~route_scope() { current_route = previous_; }

const std::string& routed_address(const std::string& address) {
  if (!current_route || address.empty() || is_remote_address(address)) return address;
  thread_local std::string routed;
  routed = *current_route + address;
  return routed;
}

void unroute_address(std::string& address) {
  auto bang = address.find(route_separator);
  if (bang == std::string::npos || !is_remote_address(address)) return;
  auto slash = address.find(node_separator);
  auto& k = keys();
  std::lock_guard lk(k.m);
  if (k.own_routes.count(address.substr(0, slash))) address.erase(0, slash + 1);
}

} // namespace multiproc::detail
