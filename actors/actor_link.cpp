#include "actors/actor_link.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/io/all.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include "actors/node_agent.hpp"
#include "framework/src/actor_node.hpp"
#include "framework/src/actor_peer.hpp"
#include "framework/src/actor_socket.hpp"
#include "framework/src/launch.hpp"
#include "multiproc/detail/export_registry.hpp"
#include "multiproc/errors.hpp"

namespace multiproc::actors {

namespace {

using bytes_atom = caf::atom_constant<caf::atom("mp_bytes")>;
using go_atom = caf::atom_constant<caf::atom("mp_go")>;

constexpr std::size_t pipe_read = 64 * 1024;

struct pipe_state {
  caf::actor peer;                     // the other pipe of the link
  caf::io::connection_handle local;    // this host's end of the connection
  int actor_pidfd = -1;                // the actor this pipe owns (its spawner's link), or -1
};
using pipe_actor = caf::stateful_actor<pipe_state, caf::io::broker>;

void write_bytes(pipe_actor* self, const std::vector<char>& bytes) {
  self->write(self->state.local, bytes.size(), bytes.data());
  self->flush(self->state.local);
}

// The exit notice the actor's code would have sent, for an actor that could not (killed).
std::vector<char> exit_notice(int code) {
  auto frame = detail::control_frame(detail::actor_frame::exit_notice, 0, code);
  std::string out;
  detail::append_frame(out, std::string_view(frame).substr(detail::frame_reserve));
  return {out.begin(), out.end()};
}

// How long an owned actor that closed its connection has to end before it is killed: it closes
// it as it exits, so this is only reached by one that lives on without its owner.
constexpr int owned_actor_exit_ms = 1000;

// Tells a freshly connected actor the way back along which this connection came (routed_from).
void tell_route(int fd, const std::string& way_back) {
  auto frame = detail::control_frame(detail::actor_frame::routed_from, 0, way_back);
  try {
    detail::write_reserved_frame(fd, frame);
  } catch (...) {
    ::close(fd);
    throw;
  }
}

// Reaps the owned actor, killing it first unless it is ending anyway (then it gets a moment to
// end: this runs on the multiplexer's thread, which must not wait for long); its exit code.
int end_owned_actor(pipe_state& st, bool kill) {
  pollfd ended{st.actor_pidfd, POLLIN, 0};
  if (kill || ::poll(&ended, 1, owned_actor_exit_ms) == 0) detail::pidfd_send_signal(st.actor_pidfd, SIGKILL);
  int code = detail::try_reap(st.actor_pidfd, true).value_or(255);
  detail::unregister_internal_fd(st.actor_pidfd);
  ::close(std::exchange(st.actor_pidfd, -1));
  return code;
}

// Starts relaying: bytes from the local end go to peer.
void start(pipe_actor* self, const caf::actor& peer) {
  self->state.peer = peer;
  self->configure_read(self->state.local, caf::io::receive_policy::at_most(pipe_read));
}

// The handlers both pipes share: relay, and end with either end.
caf::message_handler relay(pipe_actor* self) {
  self->set_down_handler([=](caf::down_msg& msg) {
    if (msg.source != self->state.peer) return;
    if (self->state.actor_pidfd >= 0) end_owned_actor(self->state, true);
    self->quit();
  });
  return {
      [=](caf::io::new_data_msg& msg) { self->send(self->state.peer, bytes_atom::value, std::move(msg.buf)); },
      [=](bytes_atom, const std::vector<char>& bytes) { write_bytes(self, bytes); },
      [=](const caf::io::connection_closed_msg&) {
        if (self->state.actor_pidfd >= 0 && self->state.peer)
          self->send(self->state.peer, bytes_atom::value, exit_notice(end_owned_actor(self->state, false)));
        self->quit();
      },
  };
}

// ---- node side -------------------------------------------------------------------------------

// The node's pipe: relays the connection fd to the actor once the client's pipe says go.
caf::behavior node_pipe(pipe_actor* self, int fd, caf::actor client, int actor_pidfd) {
  self->state.local = self->add_scribe(fd);
  self->state.actor_pidfd = actor_pidfd;
  self->state.peer = client;
  self->monitor(client);
  return relay(self).or_else(caf::message_handler{[=](go_atom) { start(self, self->state.peer); }});
}

// Closes every descriptor but the standard ones and keep (sorted, >= 3): an actor of the node
// must not hold the node's connections.
void close_all_but(std::vector<int> keep) {
  unsigned from = 3;
  std::sort(keep.begin(), keep.end());
  for (int fd : keep) {
    if (fd < 0) continue;
    if (static_cast<unsigned>(fd) > from) ::close_range(from, static_cast<unsigned>(fd) - 1, 0);
    from = static_cast<unsigned>(fd) + 1;
  }
  ::close_range(from, ~0U, 0);
}

struct spawned {
  int fd;      // connected to the actor
  int pidfd;
  pid_t pid;
  std::string address;
};

spawned spawn_here(const detail::link_request& req) {
  const auto* entry = detail::find_export(req.init);
  if (!entry || !entry->actor)
    throw ValueError("the node exports no actor init named '" + req.init +
                     "': mark it MULTIPROC_EXPORT in the program the node runs");
  detail::ActorSeat seat{req.target, detail::new_actor_address(), -1, -1};
  seat.listen_fd = detail::listen_abstract(seat.address);
  if (seat.listen_fd < 0) throw OSError(std::string("cannot bind an actor's socket: ") + std::strerror(errno), errno);
  auto close_seat = [&] {
    for (int fd : {seat.listen_fd, seat.name_fd})
      if (fd >= 0) ::close(fd);
  };
  if (!req.target.empty()) {
    seat.name_fd = detail::listen_abstract(detail::actor_name_address(req.target));
    if (seat.name_fd < 0) {
      int err = errno;
      close_seat();
      if (err == EADDRINUSE) throw ValueError("the actor name '" + req.target + "' is taken on the node");
      throw OSError("cannot register the actor name '" + req.target + "': " + std::strerror(err), err);
    }
  }
  detail::Forked child;
  try {
    auto identity = detail::next_child_identity();
    std::string name = req.target.empty() ? "NodeActor-" + std::to_string(identity.back()) : req.target;
    child = detail::fork_child({name, false, identity}, [&] {
      return detail::run_guarded([&] {
        close_all_but({seat.listen_fd, seat.name_fd});
        entry->actor(seat, req.args);
      });
    });
  } catch (...) {
    close_seat();
    throw;
  }
  close_seat();
  int fd = detail::connect_abstract(seat.address);
  if (fd < 0) {
    detail::pidfd_send_signal(child.pidfd, SIGKILL);
    detail::try_reap(child.pidfd, true);
    ::close(child.pidfd);
    throw OSError("the actor's process ended before it took its socket", ECHILD);
  }
  return {fd, child.pidfd, child.pid, seat.address};
}

// Kills the actor at req.target if pid is still its process: its socket still accepting after the
// pidfd was opened proves that the pid was not reused.
void kill_here(const detail::link_request& req) {
  int pidfd = detail::pidfd_open(req.pid);
  if (pidfd < 0) return;
  if (int fd = detail::connect_abstract(req.target); fd >= 0) {
    ::close(fd);
    detail::pidfd_send_signal(pidfd, SIGKILL);
  }
  ::close(pidfd);
}

} // namespace

std::pair<caf::actor, detail::link_answer> open_actor_link(caf::io::middleman& mm, const caf::actor& client,
                                                           const detail::link_request& req, const std::string& way_back) {
  try {
    if (req.kind == 's') {
      auto s = spawn_here(req);
      return {mm.spawn_broker(node_pipe, s.fd, client, s.pidfd), {'k', "", static_cast<int>(s.pid), s.address}};
    }
    if (req.kind == 'k') {
      kill_here(req);
      return {caf::actor{}, {'x', "killed", 0, req.target}};
    }
    if (int fd = detail::connect_abstract(req.target); fd >= 0) {
      if (!way_back.empty()) tell_route(fd, way_back);
      return {mm.spawn_broker(node_pipe, fd, client, -1), {'k', "", 0, req.target}};
    }
    return {caf::actor{}, {'x', "the actor has ended", 0, req.target}};
  } catch (...) {
    return {caf::actor{}, detail::error_answer(std::current_exception())};
  }
}

// ---- client side: the link process -----------------------------------------------------------

namespace {

void write_answer(pipe_actor* self, std::string_view packed) {
  std::string frame;
  detail::append_frame(frame, packed);
  write_bytes(self, std::vector<char>(frame.begin(), frame.end()));
}

// The answer that ends the link goes straight to the socket, first and only thing written on it:
// a broker that quits may close its scribe before the scribe wrote what it held.
void answer_and_quit(pipe_actor* self, int sock, std::string_view packed) {
  std::string frame;
  detail::append_frame(frame, packed);
  std::string_view rest = frame;
  while (!rest.empty()) {
    pollfd p{sock, POLLOUT, 0};
    ssize_t n = ::send(sock, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n > 0) {
      rest.remove_prefix(static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EAGAIN) {
      ::poll(&p, 1, -1);  // a few bytes into an empty socketpair: never more than a moment
    } else if (n < 0 && errno != EINTR) {
      break;  // the process that asked is gone: nobody to tell
    }
  }
  self->quit();
}

void fail(pipe_actor* self, int sock, std::string message) {
  answer_and_quit(self, sock, detail::encode(detail::link_answer{'o', std::move(message), 0, ""}));
}

// A request the node routed back to this host (an actor there holds a ref of one here): connect
// to an actor of this host, or kill one; never anything else, and nothing but an actor's socket.
// A connected actor first learns way_back, along which refs in its answers reach the node's host.
caf::result<caf::actor, std::vector<char>> open_routed_link(caf::io::middleman& mm, const caf::actor& client,
                                                            const std::vector<char>& request,
                                                            const std::string& way_back) {
  detail::link_answer answer{'v', "a node may only reach the actors of its client's host", 0, ""};
  caf::actor pipe;
  try {
    auto req = detail::decode<detail::link_request>(std::string_view(request.data(), request.size()));
    if ((req.kind == 'c' || req.kind == 'k') && req.route.empty() && detail::is_actor_address(req.target))
      std::tie(pipe, answer) = open_actor_link(mm, client, req, way_back);
  } catch (...) {
    answer = detail::error_answer(std::current_exception());
  }
  auto packed = detail::encode(answer);
  return {pipe, std::vector<char>(packed.begin(), packed.end())};
}

// The client's pipe: asks the agent for the link, passes its answer on, then relays; meanwhile it
// is the node's way back to this host (open_routed_link).
caf::behavior client_pipe(pipe_actor* self, int sock, caf::actor agent, std::vector<char> request,
                          std::string way_back) {
  self->state.local = self->add_scribe(sock);
  self->monitor(agent);
  self->set_down_handler([=](caf::down_msg& msg) {
    if (msg.source == agent && !self->state.peer) fail(self, sock, "the node was lost: " + self->home_system().render(msg.reason));
  });
  self->request(agent, caf::infinite, actor_link_atom::value, caf::actor_cast<caf::actor>(self), std::move(request))
      .then(
          [=](caf::actor& pipe, std::vector<char>& answer) {
            std::string_view packed(answer.data(), answer.size());
            if (!pipe) return answer_and_quit(self, sock, packed);
            write_answer(self, packed);
            self->send(pipe, go_atom::value);
            self->demonitor(agent);
            self->monitor(pipe);
            start(self, pipe);
            auto& mm = self->home_system().middleman();
            self->become(relay(self).or_else([&mm, way_back](actor_link_atom, const caf::actor& client,
                                                              const std::vector<char>& routed) {
              return open_routed_link(mm, client, routed, way_back);
            }));
          },
          [=](caf::error& e) { fail(self, sock, self->home_system().render(e)); });
  // Until the answer: the process that asked closed its end, so the link is not wanted.
  return {[=](const caf::io::connection_closed_msg&) { self->quit(); }};
}

} // namespace

int run_actor_link(int sock, const std::string& node, const std::string& authkey, const std::string& request,
                   const std::string& way_back) {
  auto& sys = lasting_system();
  caf::actor agent;
  try {
    agent = basp_connect(sys, connect_node(node, authkey), node);
  } catch (...) {
    std::string frame;
    detail::append_frame(frame, detail::encode(detail::error_answer(std::current_exception())));
    (void)!::write(sock, frame.data(), frame.size());
    return 0;
  }
  auto pipe = sys.middleman().spawn_broker(client_pipe, sock, agent, std::vector<char>(request.begin(), request.end()),
                                           way_back);
  caf::scoped_actor self{sys};
  self->wait_for(pipe);
  return 0;
}

} // namespace multiproc::actors
