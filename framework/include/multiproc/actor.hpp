// mp::spawn, mp::ActorRef, mp::Behavior — process-hosted actors, in the manner of Erlang's
// processes (Python's multiprocessing has none; each actor here is a multiproc Process).
//
// An actor is a process with a mailbox. spawn() starts it (any start method) and runs
// init(ctx, args...) there; the Behavior init returns holds one handler per message type, and
// each message goes to the handler whose parameter type is the message's C++ type, one message at
// a time, with the actor's state kept in whatever init's handlers capture. A message is any
// MessagePack-packable value (usually a struct with MSGPACK_DEFINE); its type crosses as a 64-bit
// id (detail/actor_message.hpp says how it is made and how a type can fix it by name).
//
// An ActorRef is data — the actor's name, pid and socket address — so it packs into messages and
// passes to Processes, Pool tasks and other actors. Every process talks to an actor over its own
// Unix socket straight to the actor (one connection per process and actor, so messages from one
// process arrive in the order sent); the actor accepts only peers of its own user (SO_PEERCRED).
// Addresses and names live in Linux's abstract socket namespace: they vanish with the actor's
// process however it ends, so a name is free again as soon as its holder has ended.
//
// Let it crash: an exception escaping a handler ends the actor with exit code 1 (the error is
// printed as a Process prints it); the request being answered fails with RemoteError, queued
// requests with ActorExited; monitors receive Down and links end too (or receive Exit).
// Two actors that each wait to write to the other while both sockets are full wait for ever, as
// two processes writing to each other's full pipes do: keep what crosses in one go below the
// socket buffer (~200 KiB), or answer with requests.
// Thread safety: ActorRef's members may be called from several threads at once; ActorContext is
// the actor's own and used from its handlers only. In a forked child, refs keep working (the
// child opens its own connections).
// Shutdown: ActorRef::stop() asks, waits `grace`, then SIGKILLs. An actor dies with the thread
// that spawned it (as Process documents), and a process's normal exit stops the actors it
// spawned (asked first, SIGKILL after one second), so no actor outlives its spawner.
// ActorRef has no destructor duty: dropping every ref does not stop the actor.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "multiproc/detail/actor_message.hpp"
#include "multiproc/errors.hpp"
#include "multiproc/pool.hpp"
#include "multiproc/process.hpp"

namespace multiproc {

// The actor ended before it answered. exitcode(): its exit code, -SIG when a signal killed it,
// 255 when its end was seen but its code could not be learnt (it was neither ours nor polite).
struct ActorExited : ProcessError {
  ActorExited(std::string what, int exitcode) : ProcessError(std::move(what)), exitcode_(exitcode) {}
  int exitcode() const noexcept { return exitcode_; }

private:
  int exitcode_;
};

class ActorContext;
class ActorRef;
namespace detail {
class actor_loop;
struct actor_ref_access;
msgpack::object_handle actor_request(const ActorRef& to, std::string& frame, Deadline deadline);
void actor_request_async(const ActorRef& to, std::string frame,
                         std::function<void(const msgpack::object*, std::exception_ptr)> done);
void actor_send(const ActorRef& to, std::string& frame);

// While one lives on a thread, refs of this host's actors pack with the way back to them from
// the host of `to`, an actor on a node (actor_node.hpp): frames for such an actor are made under
// one. Does nothing for an actor of this host.
class route_scope {
public:
  explicit route_scope(const ActorRef& to);
  explicit route_scope(const std::string& route);  // "node!route" (nothing for ""): along that link
  ~route_scope();
  route_scope(const route_scope&) = delete;
  route_scope& operator=(const route_scope&) = delete;

private:
  const std::string* previous_;
  std::string route_;
};
// An actor's address as it packs under the thread's route_scope (unchanged without one).
const std::string& routed_address(const std::string& address);
// A received address routed back through this process's own link is this host's address again.
void unroute_address(std::string& address);

// The frame of msg for `to`.
template <class M>
std::string make_frame_to(const ActorRef& to, actor_frame kind, const M& msg) {
  route_scope scope(to);
  return make_frame(kind, msg);
}
template <class R>
class actor_reply_job final : public result_job<stored_t<R>> {
public:
  void deliver(std::size_t, const msgpack::object& body) override {
    if constexpr (!std::is_void_v<R>) this->value_ = convert<R>(body);
  }
};
} // namespace detail

// A reference to an actor (or to nothing). Cheap to copy; packs into messages.
class ActorRef {
public:
  ActorRef() = default;

  // Queues msg for the actor and returns without waiting for the handler. Sends leave in
  // batches, as a Queue's puts do: written by a feeder thread that the process's first send
  // starts (in an actor, by its own loop once the current handler returns), or by the next
  // request to the same actor; past 256 KiB not yet written the sender writes them itself and
  // waits while the actor's socket is full. From one process, messages arrive in the order sent
  // (requests included). To an actor that has ended (or a null ref) the message is dropped, as
  // Erlang drops it. What a process sent is written before it exits normally.
  template <class M>
  void send(const M& msg) const {
    auto frame = detail::make_frame_to(*this, detail::actor_frame::send, msg);
    detail::actor_send(*this, frame);
  }

  // Sends msg and waits for the handler's return value, at most `timeout`. TimeoutError past it
  // (a late answer is dropped); RemoteError when the handler threw (type and message); ActorExited
  // when the actor ended before answering; TypeError when no handler takes M, or when the answer
  // is not an R. An actor cannot request itself (ValueError). Thread-safe.
  template <class R = void, class M, class Rep, class Period>
  R request(const M& msg, std::chrono::duration<Rep, Period> timeout) const {
    auto frame = detail::make_frame_to(*this, detail::actor_frame::request, msg);
    auto reply = detail::actor_request(*this, frame, detail::deadline_after(timeout));
    if constexpr (!std::is_void_v<R>) return detail::convert<R>(reply.get());
  }

  // As request, without a timeout: the AsyncResult becomes ready with the answer or the error.
  // A helper thread waits for the answer; it ends with the answer or with the actor.
  template <class R = void, class M>
  AsyncResult<R> request_async(const M& msg) const {
    auto job = std::make_shared<detail::actor_reply_job<R>>();
    auto frame = detail::make_frame_to(*this, detail::actor_frame::request, msg);
    detail::actor_request_async(*this, std::move(frame),
                                [job](const msgpack::object* body, std::exception_ptr error) {
                                  if (body) {
                                    try {
                                      job->deliver(0, *body);
                                    } catch (...) {
                                      error = std::current_exception();
                                    }
                                  }
                                  if (error) job->fail(0, 1, error);
                                  job->complete();
                                });
    return AsyncResult<R>(std::move(job));
  }

  // Ends the actor after the message it is handling: asks it, waits at most grace, then SIGKILLs
  // it. Returns once it has ended (at once when it had). ValueError on a null ref.
  template <class Rep = long, class Period = std::ratio<1>>
  void stop(std::chrono::duration<Rep, Period> grace = std::chrono::seconds(5)) const {
    stop_for(std::chrono::duration_cast<std::chrono::milliseconds>(grace));
  }
  // Whether the actor still runs (false for a null ref). Connects to it if this process has not.
  bool alive() const;
  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }  // "" when it registered none
  // Its socket address ("@multiproc-actor-..." for the abstract namespace): unique per actor.
  const std::string& address() const { return address_; }

  explicit operator bool() const { return !address_.empty(); }
  friend bool operator==(const ActorRef& a, const ActorRef& b) { return a.address_ == b.address_; }

  // As MSGPACK_DEFINE(name_, pid_, address_), the address routed for an actor on a node.
  template <class Packer>
  void msgpack_pack(Packer& pk) const {
    msgpack::type::make_define_array(name_, pid_, detail::routed_address(address_)).msgpack_pack(pk);
  }
  void msgpack_unpack(const msgpack::object& o) {
    msgpack::type::make_define_array(name_, pid_, address_).msgpack_unpack(o);
    detail::unroute_address(address_);
  }
  template <class Object>
  void msgpack_object(Object* o, msgpack::zone& z) const {
    msgpack::type::make_define_array(name_, pid_, address_).msgpack_object(o, z);
  }

private:
  friend struct detail::actor_ref_access;
  ActorRef(std::string name, pid_t pid, std::string address)
      : name_(std::move(name)), pid_(pid), address_(std::move(address)) {}
  void stop_for(std::chrono::milliseconds grace) const;

  std::string name_;
  pid_t pid_ = 0;
  std::string address_;
};

// An actor's handlers, one per message type. Each is a lambda or function taking one message
// (by value or const reference) and returning void or a packable answer. Two handlers for one
// type: ValueError.
class Behavior {
public:
  template <class... Handlers>
    requires(!std::same_as<std::decay_t<Handlers>, Behavior> && ...)
  Behavior(Handlers... handlers) {
    (add(detail::make_handler(std::move(handlers))), ...);
  }

private:
  friend class detail::actor_loop;
  void add(detail::handler_entry entry);
  std::vector<detail::handler_entry> handlers_;
};

// A monitored actor ended (ActorContext::monitor). exitcode as ActorExited's.
struct Down {
  ActorRef actor;
  int exitcode = 0;
  MSGPACK_DEFINE(actor, exitcode);
};
// A linked actor ended, delivered instead of ending too while trap_exit is on.
struct Exit {
  ActorRef actor;
  int exitcode = 0;
  MSGPACK_DEFINE(actor, exitcode);
};

// What an actor's code sees of itself; valid in init and in handlers, in the actor's process.
class ActorContext {
public:
  ActorRef self() const;
  // Ends the actor with this exit code once the current message is handled.
  void quit(int exitcode = 0);
  // A Down arrives when `other` ends (at once when it has already).
  void monitor(const ActorRef& other);
  // Ties both ends: when either ends with an exit code other than 0, the other ends with it too
  // (1 for a negative code), unless it traps exits: then it receives an Exit. Either way a
  // trapping actor receives Exit for any end of a linked one.
  void link(const ActorRef& other);
  void trap_exit(bool on);
  // Sends msg to `to` after delay (from this actor, as ActorRef::send would). Timers of an actor
  // that ends are dropped.
  template <class M, class Rep, class Period>
  void send_after(const ActorRef& to, const M& msg, std::chrono::duration<Rep, Period> delay) {
    schedule(to, detail::make_frame_to(to, detail::actor_frame::send, msg),
             std::chrono::duration_cast<std::chrono::nanoseconds>(delay));
  }

private:
  friend class detail::actor_loop;
  explicit ActorContext(detail::actor_loop& loop) : loop_(&loop) {}
  void schedule(const ActorRef& to, std::string frame, std::chrono::nanoseconds delay);
  detail::actor_loop* loop_;
};

struct ActorOptions {
  std::string name{};                         // non-empty: registered host-wide under it
  std::optional<StartMethod> start_method{};  // as Process's; nullopt: get_start_method()
  std::string node{};     // non-empty: "host:port" of a node (node.hpp) that runs the actor
  std::string authkey{};  // the node's key
};

namespace detail {
// Where a new actor lives: its name, its socket's address and the listening sockets (its own,
// and its name's or -1) that its process takes over. gate_fd >= 0: a standby's gate (see
// spawn_standby), read before anything else runs.
struct ActorSeat {
  std::string name;
  std::string address;
  int listen_fd = -1;
  int name_fd = -1;
  int gate_fd = -1;
};
template <>
struct reducer<ActorSeat> {
  static void reduce(const ActorSeat& seat, msgpack::packer<Buffer>& pk, Reduction& r) {
    pk.pack_array(5);
    pk.pack(seat.name);
    pk.pack(seat.address);
    reducer<Descriptor>::reduce({seat.listen_fd}, pk, r);
    reducer<Descriptor>::reduce({seat.name_fd}, pk, r);
    reducer<Descriptor>::reduce({seat.gate_fd}, pk, r);
  }
  static ActorSeat rebuild(const msgpack::object& o, ReceivedFds& fds) {
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 5) throw TypeError("a malformed actor seat");
    const auto* f = o.via.array.ptr;
    return {convert<std::string>(f[0]), convert<std::string>(f[1]), reducer<Descriptor>::rebuild(f[2], fds).fd,
            reducer<Descriptor>::rebuild(f[3], fds).fd, reducer<Descriptor>::rebuild(f[4], fds).fd};
  }
};
// The actor's whole life in its process: init's Behavior serving the seat's sockets.
void run_actor(const ActorSeat& seat, std::function<Behavior(ActorContext&)> init);
// An actor process's target, under every start method (init and args cross as a Process's do).
template <class Fn, class... A>
void run_actor_target(ActorSeat seat, Fn init, A... args) {
  run_actor(seat, [&](ActorContext& ctx) -> Behavior { return init(ctx, args...); });
}
// The (unstarted) Process of a new actor serving `seat` with init(ctx, args...), under `method`
// (nullopt: get_start_method()). Under spawn and forkserver init must be a plain function (its
// args cross as a Process's do), else ValueError.
template <class F, class... A>
Process actor_process(std::optional<StartMethod> method, ActorSeat seat, F& init, A&... args) {
  ProcessOptions process{.name = seat.name, .daemon = false, .start_method = method};
  if constexpr (plain_function<F>) {
    return Process(std::move(process), &run_actor_target<fn_ptr_t<F>, A...>, std::move(seat), +init, args...);
  } else {
    if (method.value_or(get_start_method()) != StartMethod::fork) throw_untransferable_target(type_name<F>());
    return Process(std::move(process), &run_actor_target<F, A...>, std::move(seat), init, args...);
  }
}
// Starts the actor on options.node: init must be exported (ValueError naming MULTIPROC_EXPORT),
// args is its arguments packed as one array. AuthenticationError on a wrong key, OSError when the
// node cannot be reached.
ActorRef spawn_on_node(const ActorOptions& options, erased_fn init, const std::function<std::string()>& pack_args);
template <class Tuple, std::size_t... I>
auto tuple_tail(std::index_sequence<I...>) -> std::tuple<std::tuple_element_t<I + 1, Tuple>...>;
template <auto F>
void start_exported_actor(const ActorSeat& seat, std::string_view args) {
  using params = typename fn_traits<decltype(F)>::args;
  using rest = decltype(tuple_tail<params>(std::make_index_sequence<std::tuple_size_v<params> - 1>()));
  auto values = decode<rest>(args);
  run_actor(seat, [&](ActorContext& ctx) -> Behavior {
    return std::apply([&](auto&... a) { return F(ctx, a...); }, values);
  });
}
// Takes the actor's seat (its name, ValueError when taken), starts the Process that
// make_process(options' start method, seat) builds, and keeps it. held_name_fd >= 0: the name's
// listening socket, bound by a caller that keeps it across incarnations (a supervisor, so that
// the name never goes unbound while a child restarts); the process serves a copy of it.
ActorRef spawn_actor(const ActorOptions& options,
                     const std::function<Process(std::optional<StartMethod>, ActorSeat)>& make_process,
                     int held_name_fd = -1);
// An actor whose process is started but waits at its gate, before its init: a supervisor's next
// incarnation of a child, ready before it is needed, so that a restart costs no process start.
// Opening the gate lets it run as spawn_actor's would; closing it ends the process (exit code 0)
// without running anything. The destructor closes it; close() also reaps the process.
class StandbyActor {
public:
  StandbyActor() = default;
  StandbyActor(ActorRef ref, int gate_fd) : ref_(std::move(ref)), gate_fd_(gate_fd) {}
  StandbyActor(StandbyActor&& other) noexcept
      : ref_(std::move(other.ref_)), gate_fd_(std::exchange(other.gate_fd_, -1)) {}
  StandbyActor& operator=(StandbyActor&& other) noexcept;
  ~StandbyActor();
  explicit operator bool() const { return gate_fd_ >= 0; }
  // Lets the actor run; its ref. Empty afterwards.
  ActorRef open();
  // Sends it away and waits (at most `patience`, then SIGKILL) until its process has ended.
  void close(std::chrono::milliseconds patience = std::chrono::milliseconds(5000));

private:
  ActorRef ref_;
  int gate_fd_ = -1;
};
// As spawn_actor, but the process waits at its gate.
StandbyActor spawn_standby(const ActorOptions& options,
                           const std::function<Process(std::optional<StartMethod>, ActorSeat)>& make_process,
                           int held_name_fd = -1);
} // namespace detail

// Starts an actor: init(ctx, args...) runs in the new process and returns its Behavior. With a
// name: ValueError when an actor of this user holds it already (or it is longer than 80 bytes).
// Under spawn and forkserver, as for a Process: init is a function pointer or a captureless
// lambda and args cross as MessagePack or library handles, else ValueError. OSError when the
// process cannot start. Thread-safe.
template <class F, class... A>
ActorRef spawn(ActorOptions options, F init, A... args) {
  static_assert(std::is_invocable_r_v<Behavior, F&, ActorContext&, A&...>,
                "multiproc::spawn: init must be callable as init(ActorContext&, args...) and return a Behavior");
  if (!options.node.empty()) {
    if constexpr (!detail::plain_function<F>) {
      throw ValueError("an actor on a node runs an init marked MULTIPROC_EXPORT(function), not " + detail::type_name<F>());
    } else if constexpr (!(detail::packable<A> && ...)) {
      throw ValueError("the arguments of an actor on a node cross as MessagePack: handles cannot go to another host");
    } else {
      return detail::spawn_on_node(options, reinterpret_cast<detail::erased_fn>(+init),
                                   [&] { return detail::encode(std::tuple<A...>(args...)); });
    }
  }
  return detail::spawn_actor(options, [&](std::optional<StartMethod> method, detail::ActorSeat seat) {
    return detail::actor_process(method, std::move(seat), init, args...);
  });
}
template <class F, class... A>
  requires(!std::same_as<std::decay_t<F>, ActorOptions>)
ActorRef spawn(F init, A... args) {
  return spawn(ActorOptions{}, std::move(init), std::move(args)...);
}

// The actor of this user that holds `name` now, or ActorRef{} when none does. Waits for that
// actor to answer (it answers between messages), at most 10 s: TimeoutError beyond.
ActorRef whereis(std::string_view name);

} // namespace multiproc

// Supervision trees belong to <multiproc/actor.hpp> (API.md), in a header of their own.
#include "multiproc/supervisor.hpp"
