// The public face of actors: spawn, whereis, and what an ActorRef or ActorContext does, on top of
// the connections (actor_peer) and the mailbox loop (actor_loop).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "actor_loop.hpp"
#include "actor_node.hpp"
#include "actor_peer.hpp"
#include "actor_socket.hpp"
#include "launch.hpp"
#include "log.hpp"
#include "multiproc/actor.hpp"
#include "multiproc/detail/errc.hpp"

namespace multiproc {

namespace detail {

namespace {

// How long a spawner's normal exit waits for the actors it spawned before it kills them.
constexpr std::chrono::seconds exit_grace{1};
constexpr std::chrono::seconds whereis_timeout{10};
// How long a requester that saw its actor's sockets close waits for the process to be reapable.
constexpr std::chrono::seconds reap_patience{2};

bool is_self(const ActorRef& ref) {
  auto* loop = current_actor();
  return loop && loop->self() == ref;
}

void ask_to_stop(actor_peer& peer) {
  auto frame = control_frame(actor_frame::stop, 0, msgpack::type::nil_t());
  peer.write(frame);
}

// Waits until an actor that is not ours ended: its pidfd (opened while it was known alive, so
// that a reused pid cannot stand in for it) becomes readable; SIGKILL once the deadline passed.
void wait_or_kill_stranger(int pidfd, Deadline deadline) {
  if (block_until_readable(pidfd, deadline)) return;
  pidfd_send_signal(pidfd, SIGKILL);
  block_until_readable(pidfd, std::nullopt);
}

// Waits until the connection shows the actor's end, so that its exit code is learnt and the
// connection freed.
// Whether the connection showed the actor's end before the deadline.
bool await_end(actor_peer& peer, Deadline deadline) {
  while (!peer.pump()) {
    if (Clock::now() >= *deadline) return false;
    block_until_readable(peer.fd(), deadline);
  }
  return true;
}

void settle(const std::shared_ptr<actor_peer>& peer) {
  if (!peer) return;
  await_end(*peer, deadline_after(std::chrono::seconds(5)));
  forget_peer(*peer);
}

// The spawner's exit: every actor it spawned and that still runs is asked to stop, then killed.
void stop_spawned_at_exit();

void install_exit_hook() {
  static std::once_flag once;
  std::call_once(once, [] { at_process_exit(stop_spawned_at_exit, 5); });
}

} // namespace

void actor_send(const ActorRef& to, std::string& frame) {
  if (!to) return;
  if (is_self(to)) return current_actor()->enqueue_local(frame.substr(frame_reserve));
  if (auto peer = peer_for(to)) peer->post(frame);
}

namespace {

void check_requestable(const ActorRef& to) {
  if (!to) throw ValueError("request() on a null ActorRef");
  if (is_self(to)) throw ValueError("an actor cannot request itself: it would wait for its own answer");
}

std::shared_ptr<actor_peer> peer_or_exited(const ActorRef& to) {
  auto peer = peer_for(to);
  if (peer) return peer;
  int code = learn_exit_code(to, std::nullopt);
  throw ActorExited("actor " + to.address() + " has ended (exit code " + std::to_string(code) + ")", code);
}

// The answer to request `id`: the handler's value, or its error raised here.
msgpack::object_handle answer_of(const ActorRef& to, actor_peer& peer, std::uint64_t id, Deadline deadline) {
  std::string reply;
  try {
    reply = peer.wait(id, deadline);
  } catch (const ActorExited&) {
    // Its sockets are closed, so its process is ending: reap it (if ours) before reporting.
    forget_peer(peer);
    reap_spawned(to, deadline_after(reap_patience));
    throw;
  }
  std::string_view payload(reply);
  if (frame_kind(payload) == actor_frame::reply) return unpack_untrusted(frame_body(payload));
  auto [code, type, message] = decode<std::tuple<int, std::string, std::string>>(frame_body(payload));
  raise(static_cast<errc>(code), message, type);
}

} // namespace

msgpack::object_handle actor_request(const ActorRef& to, std::string& frame, Deadline deadline) {
  check_requestable(to);
  auto peer = peer_or_exited(to);
  return answer_of(to, *peer, peer->submit(frame), deadline);
}

void actor_request_async(const ActorRef& to, std::string frame,
                         std::function<void(const msgpack::object*, std::exception_ptr)> done) {
  // Sent here, so that it keeps its place among this process's messages; answered on a thread.
  std::shared_ptr<actor_peer> peer;
  std::uint64_t id = 0;
  try {
    check_requestable(to);
    peer = peer_or_exited(to);
    id = peer->submit(frame);
  } catch (...) {
    return done(nullptr, std::current_exception());
  }
  std::thread([to, peer, id, done = std::move(done)] {
    msgpack::object_handle reply;
    try {
      reply = answer_of(to, *peer, id, std::nullopt);
    } catch (...) {
      return done(nullptr, std::current_exception());
    }
    done(&reply.get(), nullptr);
  }).detach();
}

namespace {

void stop_spawned_at_exit() {
  std::vector<std::pair<ActorRef, std::shared_ptr<Process>>> running;
  for (auto& ref : spawned_refs())
    if (auto process = spawned_process(ref); process && process->is_alive()) running.emplace_back(ref, process);
  for (auto& [ref, process] : running)
    if (auto peer = peer_for(ref)) ask_to_stop(*peer);
  auto deadline = Clock::now() + exit_grace;
  for (auto& [ref, process] : running) {
    auto left = std::chrono::duration<double>(deadline - Clock::now());
    if (!process->join(left)) process->kill();
    reap_spawned(ref, std::nullopt);
  }
}

// The name socket a new actor's process serves: a copy of a held one (its holder keeps its own),
// one taken now, or -1 for an actor without a name.
int seat_name_fd(const std::string& name, int held_name_fd) {
  if (held_name_fd < 0) return name.empty() ? -1 : take_actor_name(name);
  int fd = ::fcntl(held_name_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    throw OSError(std::string("cannot copy an actor name's socket: ") + std::strerror(errno), errno);
  return fd;
}

// A standby's wait: whether its gate was opened (a byte) rather than closed (EOF).
bool pass_gate(int gate_fd) {
  char go = 0;
  ssize_t n;
  do {
    n = ::read(gate_fd, &go, 1);
  } while (n < 0 && errno == EINTR);
  ::close(gate_fd);
  return n == 1;
}

} // namespace

void run_actor(const ActorSeat& seat, std::function<Behavior(ActorContext&)> init) {
  if (seat.gate_fd >= 0 && !pass_gate(seat.gate_fd)) return;
  actor_loop loop(actor_ref_access::make(seat.name, ::getpid(), seat.address), seat.listen_fd, seat.name_fd);
  if (int code = loop.run(init)) throw SystemExit{code};
}

namespace {

// spawn_actor's work; gate_fd >= 0 starts the process at that gate.
ActorRef start_actor_process(const ActorOptions& options,
                             const std::function<Process(std::optional<StartMethod>, ActorSeat)>& make_process,
                             int held_name_fd, int gate_fd) {
  std::string address = new_actor_address();
  int listen_fd = listen_abstract(address);
  if (listen_fd < 0) throw OSError(std::string("cannot bind an actor's socket: ") + std::strerror(errno), errno);
  int name_fd = -1;
  try {
    name_fd = seat_name_fd(options.name, held_name_fd);
  } catch (...) {
    ::close(listen_fd);
    throw;
  }
  std::shared_ptr<Process> process;
  install_exit_hook();
  try {
    process = std::make_shared<Process>(
        make_process(options.start_method, {options.name, address, listen_fd, name_fd, gate_fd}));
    process->start();
  } catch (...) {
    ::close(listen_fd);
    if (name_fd >= 0) ::close(name_fd);
    throw;
  }
  ::close(listen_fd);
  if (name_fd >= 0) ::close(name_fd);
  auto ref = actor_ref_access::make(options.name, *process->pid(), address);
  adopt_spawned(ref, std::move(process));
  return ref;
}

} // namespace

ActorRef spawn_actor(const ActorOptions& options,
                     const std::function<Process(std::optional<StartMethod>, ActorSeat)>& make_process,
                     int held_name_fd) {
  return start_actor_process(options, make_process, held_name_fd, -1);
}

StandbyActor spawn_standby(const ActorOptions& options,
                           const std::function<Process(std::optional<StartMethod>, ActorSeat)>& make_process,
                           int held_name_fd) {
  // A socket rather than a pipe: opening the gate of a standby that died is not a SIGPIPE.
  int gate[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, gate) != 0)
    throw OSError(std::string("cannot make a standby's gate: ") + std::strerror(errno), errno);
  // No other child may keep the writing end: closing it must be the standby's EOF.
  register_internal_fd(gate[1]);
  ActorRef ref;
  try {
    ref = start_actor_process(options, make_process, held_name_fd, gate[0]);
  } catch (...) {
    ::close(gate[0]);
    unregister_internal_fd(gate[1]);
    ::close(gate[1]);
    throw;
  }
  ::close(gate[0]);
  return {std::move(ref), gate[1]};
}

StandbyActor& StandbyActor::operator=(StandbyActor&& other) noexcept {
  if (this != &other) {
    close();
    ref_ = std::move(other.ref_);
    gate_fd_ = std::exchange(other.gate_fd_, -1);
  }
  return *this;
}

StandbyActor::~StandbyActor() { close(); }

ActorRef StandbyActor::open() {
  if (gate_fd_ < 0) throw ValueError("a standby actor that was opened or closed already");
  if (!ref_.alive()) {  // killed while it waited: nothing to open
    close();
    return {};
  }
  char go = 1;
  ssize_t n;
  do {
    n = ::send(gate_fd_, &go, 1, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  unregister_internal_fd(gate_fd_);
  ::close(std::exchange(gate_fd_, -1));
  // One that dies from here on is an actor that ended at once: its watcher reports it.
  return std::exchange(ref_, {});
}

void StandbyActor::close(std::chrono::milliseconds patience) {
  if (gate_fd_ < 0) return;
  unregister_internal_fd(gate_fd_);
  ::close(std::exchange(gate_fd_, -1));
  if (auto process = spawned_process(ref_)) {
    if (!process->join(std::chrono::duration<double>(patience))) process->kill();
  }
  reap_spawned(ref_, std::nullopt);
  ref_ = {};
}

} // namespace detail

bool ActorRef::alive() const {
  if (!*this) return false;
  if (detail::is_self(*this)) return true;
  if (detail::recorded_end(*this)) return false;
  if (auto process = detail::spawned_process(*this)) {
    if (process->is_alive()) return true;
    detail::reap_spawned(*this, std::nullopt);
    return false;
  }
  auto peer = detail::peer_for(*this);
  if (!peer) return false;
  if (!peer->pump()) return true;
  detail::forget_peer(*peer);
  return false;
}

void ActorRef::stop_for(std::chrono::milliseconds grace) const {
  if (!*this) throw ValueError("stop() on a null ActorRef");
  if (detail::is_self(*this)) throw ValueError("an actor ends itself with ActorContext::quit, not stop()");
  auto deadline = detail::deadline_after(grace);
  auto peer = detail::peer_for(*this);
  if (auto process = detail::spawned_process(*this)) {
    if (peer) detail::ask_to_stop(*peer);
    if (!process->join(std::chrono::duration<double>(*deadline - detail::Clock::now()))) process->kill();
    detail::reap_spawned(*this, std::nullopt);
  } else if (peer && detail::is_remote_address(address_)) {
    detail::ask_to_stop(*peer);
    if (!detail::await_end(*peer, deadline)) detail::kill_on_node(*this);
  } else if (peer) {
    int pidfd = detail::pidfd_open(pid_);
    // The connection still open after the pidfd was made proves the pid is still this actor's.
    if (pidfd >= 0 && !peer->pump()) {
      detail::ask_to_stop(*peer);
      detail::wait_or_kill_stranger(pidfd, deadline);
    }
    if (pidfd >= 0) ::close(pidfd);
  }
  detail::settle(peer);
}

ActorRef whereis(std::string_view name) {
  // An actor asking for its own name would wait for its own answer.
  if (auto* loop = detail::current_actor(); loop && !name.empty() && loop->self().name() == name) return loop->self();
  int fd = detail::connect_abstract(detail::actor_name_address(name));
  if (fd < 0) return {};
  detail::actor_peer peer(fd, ActorRef{});
  auto frame = detail::control_frame(detail::actor_frame::whoami, 0, msgpack::type::nil_t());
  std::string reply;
  try {
    reply = peer.call(frame, detail::deadline_after(detail::whereis_timeout));
  } catch (const ActorExited&) {
    return {};
  }
  auto ref = detail::decode<ActorRef>(detail::frame_body(reply));
  // The actor that answered serves this connection as any other: keeping it as this process's
  // connection to the actor spares the first request a connect, and the actor a wake-up to
  // accept it (a client looking up a restarted child asks it at once).
  if (ref && !detail::is_remote_address(ref.address()))
    if (int kept = ::fcntl(peer.fd(), F_DUPFD_CLOEXEC, 0); kept >= 0)
      detail::adopt_peer(std::make_shared<detail::actor_peer>(kept, ref));
  return ref;
}

void Behavior::add(detail::handler_entry entry) {
  for (auto& h : handlers_)
    if (h.type_id == entry.type_id)
      throw ValueError("a Behavior has two handlers for message type " + entry.type_name);
  handlers_.push_back(std::move(entry));
}

ActorRef ActorContext::self() const { return loop_->self(); }
void ActorContext::quit(int exitcode) { loop_->quit(exitcode); }
void ActorContext::monitor(const ActorRef& other) { loop_->monitor(other); }
void ActorContext::link(const ActorRef& other) { loop_->link(other, true); }
void ActorContext::trap_exit(bool on) { loop_->trap_exit(on); }
void ActorContext::schedule(const ActorRef& to, std::string frame, std::chrono::nanoseconds delay) {
  loop_->schedule(to, std::move(frame), delay);
}

} // namespace multiproc
