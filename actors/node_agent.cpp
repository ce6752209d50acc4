#include "actors/node_agent.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp_broker.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <tuple>

#include "actors/actor_link.hpp"
#include "actors/runtime.hpp"
#include "framework/src/launch.hpp"
#include "framework/src/log.hpp"
#include "framework/src/pool_worker.hpp"
#include "multiproc/connection.hpp"
#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/export_registry.hpp"
#include "multiproc/detail/msgpack.hpp"
#include "multiproc/errors.hpp"

namespace multiproc::actors {

namespace {

using open_atom = caf::atom_constant<caf::atom("mp_open")>;
using info_atom = caf::atom_constant<caf::atom("mp_info")>;
using task_atom = caf::atom_constant<caf::atom("mp_task")>;
using answer_atom = caf::atom_constant<caf::atom("mp_answer")>;

// Connections are handed to BASP without a doorman; BASP still wants a port number for them.
constexpr std::uint16_t basp_port = 1;
constexpr auto connect_timeout = std::chrono::seconds(10);
constexpr auto max_reconnect_backoff = std::chrono::milliseconds(2000);
// Answers and chunks at least this long are a broken peer, not data (pool frames past 2 GiB use
// an extended header the relay does not speak).
constexpr std::uint32_t max_relayed_frame = 0x7fffffff;

caf::actor basp_of(caf::actor_system& sys) {
  return sys.middleman().named_broker<caf::io::basp_broker>(caf::atom("BASP"));
}

void put_be32(std::vector<char>& out, std::uint32_t v) {
  char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  out.insert(out.end(), b, b + 4);
}

std::uint32_t get_be32(const std::vector<char>& in) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

// Reads length-prefixed frames from a scribe: header (4 bytes), then the payload.
struct frame_cursor {
  bool want_header = true;

  // The payload when msg completed one; configures the next read either way. Error on a
  // length this relay refuses.
  template <class Broker>
  std::optional<std::vector<char>> take(Broker* self, caf::io::new_data_msg& msg) {
    if (want_header) {
      auto len = get_be32(msg.buf);
      // exactly(0) would close the connection (notes/caf-0.17.md): no frame here is empty.
      if (len == 0 || len >= max_relayed_frame) throw Error("a relayed pool frame has length " + std::to_string(len));
      want_header = false;
      self->configure_read(msg.handle, caf::io::receive_policy::exactly(len));
      return std::nullopt;
    }
    want_header = true;
    self->configure_read(msg.handle, caf::io::receive_policy::exactly(4));
    return std::move(msg.buf);
  }
};

template <class Broker>
void write_frame(Broker* self, caf::io::connection_handle hdl, const std::vector<char>& payload) {
  std::vector<char> header;
  put_be32(header, static_cast<std::uint32_t>(payload.size()));
  self->write(hdl, header.size(), header.data());
  self->write(hdl, payload.size(), payload.data());
  self->flush(hdl);
}

// ---- node side: a session owns one local pool worker ----------------------------------------

struct session_state {
  caf::actor peer;  // the proxy of the remote pool
  detail::Forked child{-1, -1};
  caf::io::connection_handle worker;
  frame_cursor in;
};
using session_actor = caf::stateful_actor<session_state, caf::io::broker>;

// Kills and reaps the worker; its exit code, or nullopt when it was ended already.
std::optional<int> end_worker(session_state& st) {
  if (st.child.pidfd < 0) return std::nullopt;
  detail::pidfd_send_signal(st.child.pidfd, SIGKILL);
  auto code = detail::try_reap(st.child.pidfd, true);
  detail::unregister_internal_fd(st.child.pidfd);
  ::close(std::exchange(st.child.pidfd, -1));
  return code;
}

// The runner of a chunk whose function the node does not export: the worker answers with the
// error in its turn, so that answers keep the order of the chunks. The chunk is the name.
void refuse_unexported(detail::erased_fn, std::string_view chunk, detail::Buffer&) {
  auto handle = detail::unpack_untrusted(chunk);
  std::string name = handle.get().type == msgpack::type::STR ? handle.get().as<std::string>() : "";
  throw ValueError("the node does not export a function named '" + name +
                   "': mark it MULTIPROC_EXPORT in the program the node runs");
}

void relay_chunk(session_actor* self, const std::string& name, bool star, const std::vector<char>& args) {
  const auto* entry = detail::find_export(name);
  detail::chunk_runner runner = entry ? (star ? entry->star : entry->each) : nullptr;
  detail::erased_fn fn = entry ? entry->fn : nullptr;
  std::vector<char> frame(detail::chunk_header);
  if (runner) {
    frame.insert(frame.end(), args.begin(), args.end());
  } else {
    runner = &refuse_unexported;
    msgpack::sbuffer packed;
    msgpack::pack(packed, name);
    frame.insert(frame.end(), packed.data(), packed.data() + packed.size());
  }
  std::memcpy(frame.data(), &runner, sizeof runner);
  std::memcpy(frame.data() + 8, &fn, sizeof fn);
  write_frame(self, self->state.worker, frame);
}

caf::behavior session(session_actor* self, int sock, detail::Forked child, caf::actor peer) {
  auto& st = self->state;
  st.peer = peer;
  st.child = child;
  self->monitor(peer);
  st.worker = self->add_scribe(sock);
  self->configure_read(st.worker, caf::io::receive_policy::exactly(4));
  // The remote pool is gone (closed, killed or cut off): so is its worker here.
  self->set_down_handler([=](caf::down_msg&) {
    end_worker(self->state);
    self->quit();
  });
  return {
      [=](task_atom, const std::string& name, bool star, const std::vector<char>& args) {
        relay_chunk(self, name, star, args);
      },
      [=](caf::io::new_data_msg& msg) {
        try {
          if (auto answer = self->state.in.take(self, msg))
            self->send(self->state.peer, answer_atom::value, std::move(*answer));
        } catch (const std::exception& e) {
          end_worker(self->state);
          self->quit(caf::make_error(caf::sec::runtime_error, e.what()));
        }
      },
      [=](const caf::io::connection_closed_msg&) {
        auto code = end_worker(self->state).value_or(255);
        self->quit(caf::make_error(caf::sec::runtime_error,
                                   "its worker on the node exited with code " + std::to_string(code)));
      },
  };
}

// Closes every descriptor but the standard ones and keep: a worker of the node must not hold
// the node's connections (their peers would miss the EOF when the node ends).
void close_all_but(int keep) {
  if (keep > 3) ::close_range(3, static_cast<unsigned>(keep) - 1, 0);
  ::close_range(static_cast<unsigned>(keep) + 1, ~0U, 0);
}

caf::actor open_session(caf::event_based_actor* self, const caf::actor& peer) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    throw OSError(std::string("socketpair failed: ") + std::strerror(errno), errno);
  auto identity = detail::next_child_identity();
  detail::ChildIdentity who{"NodePoolWorker-" + std::to_string(identity.back()), true, identity};
  detail::Forked child;
  try {
    child = detail::fork_child(who, [&] {
      return detail::run_guarded([&] {
        close_all_but(sv[1]);
        detail::run_pool_worker(sv[1], {}, 0);
      });
    });
  } catch (...) {
    ::close(sv[0]);
    ::close(sv[1]);
    throw;
  }
  ::close(sv[1]);
  return self->home_system().middleman().spawn_broker(session, sv[0], child, peer);
}

struct agent_state {
  // The links of clients, by the route each proposed (link_request::way_back): the way back to
  // the client's host for refs of its actors (actor_node.hpp).
  std::map<std::string, caf::actor> routes;
};
using agent_actor = caf::stateful_actor<agent_state>;

caf::result<caf::actor, std::vector<char>> pack_link_answer(caf::actor pipe, const detail::link_answer& answer) {
  auto packed = detail::encode(answer);
  return {std::move(pipe), std::vector<char>(packed.begin(), packed.end())};
}

// A request for a link: routed ones are passed along the client link they name (its link process
// answers); the others are served here. Either way the client's link becomes the route it proposed.
caf::result<caf::actor, std::vector<char>> serve_link_request(agent_actor* self, const caf::actor& client,
                                                              const std::vector<char>& request) {
  detail::link_request req;
  try {
    req = detail::decode<detail::link_request>(std::string_view(request.data(), request.size()));
  } catch (...) {
    return pack_link_answer({}, detail::error_answer(std::current_exception()));
  }
  // A route already taken stays its first link's: a client cannot take over another's way back.
  // (A link that does not last ends its route with it: the agent monitors its pipe.)
  if (!req.way_back.empty() && self->state.routes.emplace(req.way_back, client).second) self->monitor(client);
  if (!req.route.empty()) {
    auto it = self->state.routes.find(req.route);
    if (it == self->state.routes.end())
      return pack_link_answer({}, {'x', "the link to that actor's host has ended", 0, req.target});
    req.route.clear();
    auto packed = detail::encode(req);
    self->delegate(it->second, actor_link_atom::value, client, std::vector<char>(packed.begin(), packed.end()));
    return caf::delegated<caf::actor, std::vector<char>>{};
  }
  auto [pipe, answer] = open_actor_link(self->home_system().middleman(), client, req);
  return pack_link_answer(std::move(pipe), answer);
}

// (cpus is an argument rather than asked at each info_atom also because CAF 0.17.6 binds a
// reference to a null pointer when spawning a function actor without arguments: UBSan aborts.)
caf::behavior agent(agent_actor* self, std::uint32_t cpus) {
  self->set_down_handler([=](caf::down_msg& msg) {
    std::erase_if(self->state.routes, [&](const auto& route) { return route.second.address() == msg.source; });
  });
  return {
      [cpus](info_atom) { return cpus; },
      [=](actor_link_atom, const caf::actor& client, const std::vector<char>& request) {
        return serve_link_request(self, client, request);
      },
      [=](open_atom, const caf::actor& peer) -> caf::result<caf::actor> {
        try {
          return open_session(self, peer);
        } catch (const std::exception& e) {
          return caf::make_error(caf::sec::runtime_error, std::string("the node cannot start a worker: ") + e.what());
        }
      },
  };
}

class caf_node_agent final : public node_agent {
public:
  ~caf_node_agent() override {
    caf::anon_send_exit(agent_, caf::exit_reason::user_shutdown);
  }

  void adopt(int fd) override {
    // The server half of BASP's handshake goes out at once; the client answers with its own.
    caf::anon_send(basp_of(*sys_), caf::publish_atom_v, sys_->middleman().backend().new_scribe(fd), basp_port,
                   caf::actor_cast<caf::strong_actor_ptr>(agent_), std::set<std::string>{});
  }

private:
  std::shared_ptr<caf::actor_system> sys_ = acquire_system();
  caf::actor agent_ = sys_->spawn(agent, static_cast<std::uint32_t>(cpu_count()));
};

// ---- pool side: a proxy relays a worker slot of the pool to a session on the node ----------

struct proxy_state {
  caf::actor session;
  caf::io::connection_handle pool;
  frame_cursor in;
  std::string address;
  std::atomic<int>* exit_code = nullptr;
};
using proxy_actor = caf::stateful_actor<proxy_state, caf::io::broker>;

void node_lost(proxy_actor* self, const std::string& why) {
  std::cerr << "multiproc: node " << self->state.address << " lost: " << why << std::endl;
  self->state.exit_code->store(node_lost_exit);
  self->quit();
}

// A chunk from the pool, [runner][fn][args], goes to the node by the function's exported name.
void forward_chunk(proxy_actor* self, const std::vector<char>& frame) {
  if (frame.size() < detail::chunk_header) throw Error("a pool chunk frame is too short");
  detail::chunk_runner runner;
  detail::erased_fn fn;
  std::memcpy(&runner, frame.data(), sizeof runner);
  std::memcpy(&fn, frame.data() + 8, sizeof fn);
  std::vector<char> args(frame.begin() + detail::chunk_header, frame.end());
  const auto* entry = detail::find_export(fn);
  // The pool refuses unexported functions at submission; an unknown name answers with an error
  // in the worker's turn on the node.
  std::string name = entry ? entry->name : "";
  self->send(self->state.session, task_atom::value, std::move(name), entry && runner == entry->star,
             std::move(args));
}

caf::behavior proxy(proxy_actor* self, int sock, caf::actor agent, std::string address, std::atomic<int>* code) {
  auto& st = self->state;
  st.address = std::move(address);
  st.exit_code = code;
  st.pool = self->add_scribe(sock);
  self->configure_read(st.pool, caf::io::receive_policy::exactly(4));
  self->set_down_handler([=](caf::down_msg& msg) { node_lost(self, self->home_system().render(msg.reason)); });
  self->request(agent, caf::infinite, open_atom::value, caf::actor_cast<caf::actor>(self))
      .then(
          [=](caf::actor& s) {
            self->state.session = s;
            self->monitor(s);
            write_frame(self, self->state.pool, std::vector<char>{node_ready_frame});
          },
          [=](caf::error& e) { node_lost(self, self->home_system().render(e)); });
  self->monitor(agent);
  return {
      [=](caf::io::new_data_msg& msg) {
        try {
          if (auto frame = self->state.in.take(self, msg)) forward_chunk(self, *frame);
        } catch (const std::exception& e) {
          std::cerr << "multiproc: node proxy: " << e.what() << std::endl;
          self->state.exit_code->store(1);
          self->quit();
        }
      },
      [=](answer_atom, const std::vector<char>& answer) { write_frame(self, self->state.pool, answer); },
      // The pool closed the slot (join, or its process ended): the session ends with us.
      [=](const caf::io::connection_closed_msg&) { self->quit(); },
  };
}

// Waits backoff (and doubles it) before connecting again; false when the pool closed sock, done
// with this slot, meanwhile.
bool wait_for_retry(int sock, std::chrono::milliseconds& backoff) {
  pollfd p{sock, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(backoff.count())) > 0) {
    char byte;
    if (::recv(sock, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) return false;
  }
  backoff = std::min(backoff * 2, max_reconnect_backoff);
  return true;
}

// Connects and authenticates; retries while the node cannot be reached. -1 when the pool closed
// sock meanwhile.
int connect_until_ready(int sock, const std::string& address, const std::string& authkey) {
  auto backoff = std::chrono::milliseconds(50);
  // A node that is being killed can hang up in the middle of a handshake, which fails it as a
  // wrong key does; a wrong key fails every time, so a few failures in a row are believed.
  constexpr int believed_auth_failures = 3;
  for (int auth_failures = 0;;) {
    try {
      connection::Client client(address, authkey);
      int fd = ::fcntl(client.fileno(), F_DUPFD_CLOEXEC, 3);
      if (fd < 0) throw OSError(std::string("fcntl(F_DUPFD_CLOEXEC) failed: ") + std::strerror(errno), errno);
      return fd;
    } catch (const AuthenticationError&) {
      if (++auth_failures == believed_auth_failures) throw;
      if (!wait_for_retry(sock, backoff)) return -1;
    } catch (const OSError&) {
      // The node is down or unreachable: wait for it.
      if (!wait_for_retry(sock, backoff)) return -1;
    }
  }
}

} // namespace

// BASP's client half on an authenticated connection: the node's published agent.
caf::actor basp_connect(caf::actor_system& sys, int fd, const std::string& address) {
  UserThreadCall call;
  caf::scoped_actor self{sys};
  caf::actor agent;
  caf::error err;
  self->request(basp_of(sys), connect_timeout, caf::connect_atom_v, sys.middleman().backend().new_scribe(fd), basp_port)
      .receive([&](caf::node_id&, caf::strong_actor_ptr& ptr,
                   std::set<std::string>&) { agent = caf::actor_cast<caf::actor>(ptr); },
               [&](caf::error& e) { err = std::move(e); });
  if (!agent) throw OSError("the node at " + address + " did not answer BASP's handshake: " + sys.render(err), EPROTO);
  return agent;
}

// The process's actor system for the rest of its life: a proxy or probe process ends with
// _exit, and ~actor_system would wait for the BASP connection's actors.
caf::actor_system& lasting_system() {
  static auto* sys = new std::shared_ptr<caf::actor_system>(acquire_system());
  return **sys;
}

int connect_node(const std::string& address, const std::string& authkey) {
  connection::Client client(address, authkey);
  int fd = ::fcntl(client.fileno(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) throw OSError(std::string("fcntl(F_DUPFD_CLOEXEC) failed: ") + std::strerror(errno), errno);
  return fd;
}

std::unique_ptr<node_agent> make_node_agent() { return std::make_unique<caf_node_agent>(); }

int run_node_proxy(int sock, const std::string& address, const std::string& authkey) {
  int fd = connect_until_ready(sock, address, authkey);
  if (fd < 0) return 0;
  auto& sys = lasting_system();
  auto agent = basp_connect(sys, fd, address);
  std::atomic<int> code{0};
  auto relay = sys.middleman().spawn_broker(proxy, sock, agent, address, &code);
  caf::scoped_actor self{sys};
  self->wait_for(relay);
  return code.load();
}

unsigned node_cpu_count(const std::string& address, const std::string& authkey) {
  auto& sys = lasting_system();
  auto agent = basp_connect(sys, connect_node(address, authkey), address);
  UserThreadCall call;
  caf::scoped_actor self{sys};
  std::uint32_t count = 0;
  caf::error err;
  self->request(agent, connect_timeout, info_atom::value)
      .receive([&](std::uint32_t n) { count = n; }, [&](caf::error& e) { err = std::move(e); });
  if (count == 0) throw OSError("the node at " + address + " did not say how many CPUs it has: " + sys.render(err), EPROTO);
  return count;
}

} // namespace multiproc::actors
