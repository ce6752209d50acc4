#include "actors/manager_server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "actors/manager_objects.hpp"
#include "actors/runtime.hpp"
#include "manager_socket.hpp"
#include "multiproc/connection.hpp"
#include "multiproc/detail/manager_client.hpp"
#include "multiproc/detail/wire.hpp"
#include "server_handshake.hpp"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<multiproc::detail::manager::Call>)

namespace multiproc::detail::manager {

namespace {

using call_atom = caf::atom_constant<caf::atom("call")>;
using closed_atom = caf::atom_constant<caf::atom("closed")>;
using timer_atom = caf::atom_constant<caf::atom("timer")>;
using adopt_atom = caf::atom_constant<caf::atom("adopt")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using quit_atom = caf::atom_constant<caf::atom("quit")>;
using handshake_deadline_atom = caf::atom_constant<caf::atom("hsdeadline")>;

// What a session's scribe reads at most at a time.
constexpr std::size_t read_chunk = 64 * 1024;
// Out of descriptors (or threads), the listener stays readable while nothing can be accepted:
// it is left out of the poll until a session ends, or this long at most (a descriptor can also
// free up elsewhere: an object, another process for ENFILE).
constexpr int out_of_resources_pause_ms = 100;
// Timeouts beyond this are "practically forever" (and keep the timer arithmetic finite).
constexpr double max_timer_seconds = 1e9;

// ---- object actors ----------------------------------------------------------------------------

struct object_state {
  std::shared_ptr<SharedObject> object;
};
using object_actor_t = caf::stateful_actor<object_state>;

class ActorHost final : public Host {
public:
  explicit ActorHost(object_actor_t* self) : self_(self) {}
  void arm_timer(std::chrono::duration<double> delay, std::uint64_t token) override {
    double s = delay.count();
    if (!(s < max_timer_seconds)) s = max_timer_seconds;
    if (s < 0) s = 0;
    auto us = std::chrono::microseconds(static_cast<std::int64_t>(std::ceil(s * 1e6)));
    self_->delayed_send(self_, us, timer_atom::value, token);
  }

private:
  object_actor_t* self_;
};

caf::behavior object_actor(object_actor_t* self, std::shared_ptr<SharedObject> object) {
  self->state.object = std::move(object);
  return {
      [=](call_atom, std::shared_ptr<Call>& call) {
        ActorHost host(self);
        try {
          self->state.object->handle(*call, host);
        } catch (...) {
          call->sink->deliver(encode_exception(std::current_exception()));
        }
      },
      [=](closed_atom, SessionId session) { self->state.object->session_closed(session); },
      [=](timer_atom, std::uint64_t token) { self->state.object->timer_fired(token); },
  };
}

// ---- sessions ---------------------------------------------------------------------------------

// The session whose broker is serving a batch of its client's requests on this thread, and will
// write what its outbox holds when the batch is done: replies to it need no wake-up.
thread_local const void* t_serving = nullptr;

// One client connection: its identity and its outbox. Replies may be delivered from any thread
// (an object actor runs inline on the multiplexer, or on a scheduler thread for a timer); the
// session's broker writes them.
class Session final : public ReplySink {
public:
  Session(SessionId id, std::int32_t peer_pid) : ReplySink(id, peer_pid) {}

  void attach(const caf::actor& broker) { broker_ = caf::actor_cast<caf::weak_actor_ptr>(broker); }

  void deliver(std::string payload) override {
    bool wake;
    {
      std::lock_guard lock(m_);
      if (closed_) return;
      append_frame(outbox_, payload);
      wake = t_serving != this && !wake_sent_;
      wake_sent_ = wake_sent_ || wake;
    }
    if (!wake) return;
    if (auto broker = caf::actor_cast<caf::actor>(broker_)) caf::anon_send(broker, flush_atom::value);
  }

  // The frames delivered since the last call, for the broker to write.
  std::string take_outbox() {
    std::lock_guard lock(m_);
    wake_sent_ = false;
    return std::exchange(outbox_, {});
  }

  // Replies that come after this go nowhere.
  void close() {
    std::lock_guard lock(m_);
    closed_ = true;
    outbox_.clear();
  }

private:
  std::mutex m_;
  std::string outbox_;     // whole frames
  bool wake_sent_ = false;  // a flush_atom is on its way to the broker
  bool closed_ = false;
  caf::weak_actor_ptr broker_;
};

// Marks the session whose requests this thread serves now (see t_serving).
class Serving {
public:
  explicit Serving(const Session& s) : previous_(std::exchange(t_serving, &s)) {}
  ~Serving() { t_serving = previous_; }
  Serving(const Serving&) = delete;
  Serving& operator=(const Serving&) = delete;

private:
  const void* previous_;
};

// The bytes of a connection as they arrive, cut into frames (detail/wire.hpp). The buffer grows
// with the bytes that actually arrived, never with what a header claims.
class FrameBuffer {
public:
  void append(std::string_view bytes) {
    if (start_ > 0) {
      buf_.erase(0, start_);
      start_ = 0;
    }
    buf_.append(bytes);
  }

  // The next whole frame's payload (valid until the next append), or nullopt until one is in.
  // Error for a malformed header or a payload above max_payload.
  std::optional<std::string_view> next(std::size_t max_payload) {
    std::string_view rest = std::string_view(buf_).substr(start_);
    auto header = parse_frame_header(rest);
    if (!header) return std::nullopt;
    if (header->payload_size > max_payload)
      throw Error("a frame of " + std::to_string(header->payload_size) + " bytes where at most " +
                  std::to_string(max_payload) + " may come");
    if (rest.size() < header->header_size + header->payload_size) return std::nullopt;
    start_ += header->header_size + header->payload_size;
    return rest.substr(header->header_size, header->payload_size);
  }

  // Bytes received and not yet returned as a frame.
  std::size_t buffered() const { return buf_.size() - start_; }

private:
  std::string buf_;
  std::size_t start_ = 0;  // the first byte not yet returned
};

// The multiplexer thread as a CAF execution unit for object actors: an object actor that a call
// wakes up runs right here, on the thread that read the call, instead of waiting for a scheduler
// thread to wake up (a cross-CPU wake-up costs more than the call itself, notes/caf-0.17.md), and
// its reply goes out in the same round. The actor's mailbox still serializes everything: a call
// to an actor already running elsewhere just queues there.
class InlineUnit final : public caf::execution_unit {
public:
  explicit InlineUnit(caf::actor_system& system) : caf::execution_unit(&system) {}

  void exec_later(caf::resumable* job) override {
    jobs_.push_back(job);
    if (running_) return;  // an actor we run sent to another one: run that next, not nested
    running_ = true;
    while (!jobs_.empty()) {
      auto* next = jobs_.front();
      jobs_.pop_front();
      run(next);
    }
    running_ = false;
  }

  void send(const caf::actor& target, caf::message msg) {
    caf::actor_cast<caf::abstract_actor*>(target)->enqueue(
        caf::make_mailbox_element(nullptr, caf::make_message_id(), {}, std::move(msg)), this);
  }

private:
  // An actor with more queued work than this goes to the scheduler: a session serves its own
  // client first and does not get stuck draining everybody else's calls.
  static constexpr std::size_t inline_throughput = 64;

  void run(caf::resumable* job) {
    if (job->resume(this, inline_throughput) == caf::resumable::resume_later) {
      system().scheduler().enqueue(job);  // the reference CAF took for us moves along
      return;
    }
    caf::intrusive_ptr_release(job);
  }

  std::deque<caf::resumable*> jobs_;
  bool running_ = false;
};

struct ParsedRequest {
  msgpack::object_handle handle;
  std::uint64_t id = 0;
  std::string method;
};

// [id, method, [args...]] or Error.
ParsedRequest parse_request(std::string_view payload) {
  ParsedRequest r;
  r.handle = unpack_untrusted(payload);
  const auto& o = r.handle.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 3 ||
      o.via.array.ptr[0].type != msgpack::type::POSITIVE_INTEGER || o.via.array.ptr[1].type != msgpack::type::STR ||
      o.via.array.ptr[2].type != msgpack::type::ARRAY)
    throw Error("malformed request: expected [object id, method, [args...]]");
  r.id = o.via.array.ptr[0].via.u64;
  r.method = o.via.array.ptr[1].as<std::string>();
  return r;
}

caf::actor_system_config& server_config(caf::actor_system_config& cfg) {
  // Work-sharing wakes idle workers through a condition variable instead of polling (about
  // 150 µs per idle round trip with work-stealing here, notes/caf-0.17.md §7).
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", std::size_t{2});
  // The sessions' brokers run on the middleman's multiplexer, one thread for every connection.
  cfg.load<caf::io::middleman>();
  cfg.set("middleman.workers", std::size_t{0});
  return cfg;
}

// The peer's pid on a Unix socket (SO_PEERCRED: the process that connected); 0 when unknown (TCP).
std::int32_t peer_pid(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
  return cred.pid;
}

// ---- the server -------------------------------------------------------------------------------

class Server;

struct session_state {
  Server* server = nullptr;
  std::shared_ptr<Session> session;
  caf::io::connection_handle handle;
  int fd = -1;
  FrameBuffer frames;
  std::optional<ServerHandshakeSteps> handshake;  // until the client passed it
  std::size_t unwritten = 0;  // bytes handed to the scribe that it has not written yet
  bool ended = false;
  // The client's calls come back to back (see serve_while_hot): when the last reply went out,
  // and what the spin reads into.
  bool hot = false;
  detail::Clock::time_point replied{};
  std::vector<char> spin_buf;
};
using session_actor = caf::stateful_actor<session_state, caf::io::broker>;

caf::behavior session_broker(session_actor* self, Server* server, std::shared_ptr<Session> session);

class Server {
public:
  explicit Server(const ServerConfig& config)
      : config_(config), system_(actors::startable(server_config(cfg_))), inline_unit_(system_),
        listener_(config.address), stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        session_ended_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (stop_fd_ < 0 || session_ended_fd_ < 0) {
      int err = errno;
      if (stop_fd_ >= 0) ::close(stop_fd_);
      throw OSError("eventfd failed", err);
    }
  }
  ~Server() {
    ::close(stop_fd_);
    ::close(session_ended_fd_);
  }

  void run(const std::function<void(const std::string&)>& ready) {
    ready(listener_.address());
    accept_loop();
    listener_.close();
    stop_sessions();
    stop_actors();
  }

  const std::string& authkey() const { return config_.authkey; }

  // ---- what a session's broker asks of the server (on the multiplexer thread) ----

  // Hands an object call to its actor (KeyError for an unknown object). A built-in object runs
  // the call right away on this thread (InlineUnit); a user's class goes to the scheduler, so
  // that a slow method of one holds up no other client.
  void dispatch(const std::shared_ptr<Session>& session, ParsedRequest request) {
    HostedObject target;
    {
      std::lock_guard lock(m_);
      auto it = objects_.find(request.id);
      if (it != objects_.end()) target = it->second.hosted;
    }
    if (!target.actor) {
      session->deliver(encode_error(errc::key_error, "the manager has no object " + std::to_string(request.id)));
      return;
    }
    auto call = std::make_shared<Call>(Call{session, std::move(request.method), std::move(request.handle)});
    send_to(target, caf::make_message(call_atom::value, std::move(call)));
  }

  // Requests to the server itself. false: the session ends (shutdown).
  bool serve_server_call(Session& session, const ParsedRequest& request) {
    const auto& args = request.handle.get().via.array.ptr[2];
    try {
      if (request.method == "create") {
        if (args.via.array.size < 1) throw TypeError("create() needs a typeid");
        static const msgpack::object no_args = [] {
          msgpack::object o;
          o.type = msgpack::type::ARRAY;
          o.via.array = {0, nullptr};
          return o;
        }();
        auto id = create(session.id(), args.via.array.ptr[0].as<std::string>(),
                         args.via.array.size > 1 ? args.via.array.ptr[1] : no_args);
        session.deliver(encode_ok(id));
      } else if (auto reply = serve_reference_call(session.id(), request.method, args)) {
        session.deliver(std::move(*reply));
      } else if (request.method == "ping") {
        session.deliver(encode_ok(msgpack::type::nil_t{}));
      } else if (request.method == "shutdown") {
        session.deliver(encode_ok(msgpack::type::nil_t{}));
        ::eventfd_write(stop_fd_, 1);
        return false;
      } else {
        throw AttributeError("the manager has no server method '" + request.method + "'");
      }
    } catch (const msgpack::type_error&) {
      session.deliver(encode_error(errc::type_error, "create() takes a typeid string and an argument array"));
    } catch (...) {
      session.deliver(encode_exception(std::current_exception()));
    }
    return true;
  }

  // THE place where a session ends, once per authenticated session, whatever ended it: its
  // client closed or crashed, a broken frame, shutdown. Every object hears of it (a lock its
  // client held is released, its parked calls are abandoned, a JoinableQueue writes off the
  // items it held); session.id() and session.peer_pid() say whose session it was.
  // Then the references the session held go back, as do the transit tokens it took for a child
  // that never claimed them: objects nobody holds any more are freed.
  void session_ended(const Session& session) {
    std::vector<HostedObject> targets;
    {
      std::lock_guard lock(m_);
      for (const auto& [oid, object] : objects_) targets.push_back(object.hosted);
    }
    for (const auto& object : targets) send_to(object, caf::make_message(closed_atom::value, session.id()));
    Freed freed;
    {
      std::lock_guard lock(m_);
      drop_session_references(session.id(), freed);
    }
    end_actors(freed);
  }

  // The broker of a session is on its way out (its descriptor closes as it quits).
  void unregister(SessionId id) {
    {
      std::lock_guard lock(m_);
      sessions_.erase(id);
    }
    sessions_done_.notify_all();
    ::eventfd_write(session_ended_fd_, 1);  // a descriptor is about to be free again
  }

private:
  struct HostedObject {
    caf::actor actor;
    bool run_inline = false;
  };
  // An object and the references to it: every process's proxies (one per process, see
  // manager_refs.cpp) and every transit token. Freed when none is left, unless it lives for the
  // server's lifetime (a shared typeid's object).
  struct ObjectEntry {
    HostedObject hosted;
    std::string typeid_;
    std::size_t refs = 0;
    bool immortal = false;
  };
  // References on their way to another process: taken by the sender, claimed by the receiver.
  // pinned: packed into a value of a shared object, where any number of readers may claim it; it
  // keeps its objects for the server's lifetime, as CPython's server keeps such referents.
  // bound_to: a fork's token, given back with the forking session unless the child claims it.
  struct Transit {
    std::vector<std::uint64_t> ids;
    bool pinned = false;
    SessionId bound_to = 0;
  };
  using Freed = std::vector<caf::actor>;  // actors of freed objects, ended outside the lock

  // Calls on references (decref, transit, claim, claim_all) and the introspection ones; nullopt
  // for any other method.
  std::optional<std::string> serve_reference_call(SessionId session, const std::string& method,
                                                  const msgpack::object& args) {
    const auto arg = [&](std::uint32_t i) -> const msgpack::object& {
      if (i >= args.via.array.size) throw TypeError(method + "() is missing an argument");
      return args.via.array.ptr[i];
    };
    Freed freed;
    std::optional<std::string> reply;
    {
      std::lock_guard lock(m_);
      if (method == "decref") {
        decref(session, arg(0).as<std::uint64_t>(), freed);
        reply = encode_ok(msgpack::type::nil_t{});
      } else if (method == "transit") {
        reply = encode_ok(transit(session, arg(0).as<std::vector<std::uint64_t>>(), arg(1).as<bool>(), arg(2).as<bool>()));
      } else if (method == "claim") {
        reply = encode_ok(claim(session, arg(0).as<std::uint64_t>(), arg(1).as<std::uint64_t>()));
      } else if (method == "claim_all") {
        claim_all(session, arg(0).as<std::uint64_t>());
        reply = encode_ok(msgpack::type::nil_t{});
      } else if (method == "number_of_objects") {
        reply = encode_ok(objects_.size());
      } else if (method == "debug_info") {
        reply = encode_ok(debug_info());
      }
    }
    end_actors(freed);
    return reply;
  }

  // ---- references (all under m_) ----

  void incref(SessionId session, std::uint64_t id) {
    ++objects_.at(id).refs;
    ++held_[session][id];
  }

  // Gives back one reference of the session's; one it does not hold is ignored.
  void decref(SessionId session, std::uint64_t id, Freed& freed) {
    auto held = held_.find(session);
    if (held == held_.end()) return;
    auto it = held->second.find(id);
    if (it == held->second.end()) return;
    if (--it->second == 0) held->second.erase(it);
    if (held->second.empty()) held_.erase(held);
    release(id, freed);
  }

  void release(std::uint64_t id, Freed& freed) {
    auto it = objects_.find(id);
    if (it == objects_.end() || --it->second.refs > 0 || it->second.immortal) return;
    freed.push_back(std::move(it->second.hosted.actor));
    objects_.erase(it);
  }

  std::uint64_t transit(SessionId session, const std::vector<std::uint64_t>& ids, bool pinned, bool bound) {
    for (auto id : ids)
      if (!objects_.count(id)) throw KeyError("the manager has no object " + std::to_string(id));
    for (auto id : ids) ++objects_.at(id).refs;
    auto token = next_token_++;
    transits_.emplace(token, Transit{ids, pinned, bound ? session : 0});
    return token;
  }

  // The session takes over the token's reference to id (a pinned token's stays: the session gets
  // one more). Without the token, a reference of its own if the object is still there; false if
  // it is gone.
  bool claim(SessionId session, std::uint64_t token, std::uint64_t id) {
    auto it = transits_.find(token);
    if (it != transits_.end() && !it->second.pinned) {
      auto& ids = it->second.ids;
      if (auto pos = std::find(ids.begin(), ids.end(), id); pos != ids.end()) {
        ids.erase(pos);
        if (ids.empty()) transits_.erase(it);
        ++held_[session][id];
        return true;
      }
    }
    if (!objects_.count(id)) return false;
    incref(session, id);
    return true;
  }

  // A forked child takes over every reference its parent took for it.
  void claim_all(SessionId session, std::uint64_t token) {
    auto it = transits_.find(token);
    if (it == transits_.end()) return;
    for (auto id : it->second.ids) ++held_[session][id];
    transits_.erase(it);
  }

  void drop_session_references(SessionId session, Freed& freed) {
    if (auto held = held_.find(session); held != held_.end()) {
      auto refs = std::move(held->second);
      held_.erase(held);
      for (const auto& [id, count] : refs)
        for (std::size_t i = 0; i < count; ++i) release(id, freed);
    }
    for (auto it = transits_.begin(); it != transits_.end();) {
      if (it->second.bound_to != session) {
        ++it;
        continue;
      }
      for (auto id : it->second.ids) release(id, freed);
      it = transits_.erase(it);
    }
  }

  static void end_actors(Freed& freed) {
    for (auto& actor : freed) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  }

  // One line per object: "<id> <typeid> refs=<n>" (CPython's _debug_info).
  std::string debug_info() const {
    std::string out;
    for (const auto& [id, entry] : objects_)
      out += std::to_string(id) + " " + entry.typeid_ + " refs=" + std::to_string(entry.refs) + "\n";
    return out;
  }

  void send_to(const HostedObject& object, caf::message msg) {
    if (object.run_inline)
      inline_unit_.send(object.actor, std::move(msg));
    else
      caf::anon_send(object.actor, std::move(msg));
  }

  void accept_loop() {
    // A negative descriptor is ignored by poll: owner_fd when there is none, the listener while
    // the server is out of descriptors, session_ended_fd_ while it is not.
    enum { listener, stop, owner, session_ended };
    pollfd p[4] = {{listener_.fileno(), POLLIN, 0},
                   {stop_fd_, POLLIN, 0},
                   {config_.owner_fd, POLLIN, 0},
                   {-1, POLLIN, 0}};
    int timeout_ms = -1;
    for (;;) {
      int ready = ::poll(p, 4, timeout_ms);
      if (ready < 0) {
        if (errno == EINTR) continue;
        throw OSError("poll failed in the manager server", errno);
      }
      if (p[stop].revents || p[owner].revents) return;
      if (p[listener].fd < 0) {
        if (ready == 0 || p[session_ended].revents) {  // try again
          p[listener].fd = listener_.fileno();
          p[session_ended].fd = -1;
          timeout_ms = -1;
        }
        continue;
      }
      if (!p[listener].revents) continue;
      if (int err = accept_all(); err != 0) {
        drain(session_ended_fd_);
        p[listener].fd = -1;
        p[session_ended].fd = session_ended_fd_;
        timeout_ms = out_of_resources_pause_ms;
      }
    }
  }

  // Starts a session for every client in the backlog, without ever waiting: the listening socket
  // is nonblocking, so a client that vanished between poll and accept leaves nothing to wait for.
  // 0 once the backlog is empty; the errno when the server is out of descriptors or memory.
  int accept_all() {
    for (;;) {
      int fd = ::accept4(listener_.fileno(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        start_session(fd);
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (out_of_resources(errno)) return errno;
      // EINTR, or a client that gave up before we got to it (ECONNABORTED, a network error):
      // no reason to stop serving.
    }
  }

  static bool out_of_resources(int err) {
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
  }

  static void drain(int event_fd) {
    eventfd_t ignored;
    ::eventfd_read(event_fd, &ignored);
  }

  // The session's broker adopts fd on the multiplexer; from then on the connection costs memory,
  // not a thread.
  void start_session(int fd) {
    keep_alive_if_tcp(fd);  // a vanished client host still releases its locks
    auto session = std::make_shared<Session>(next_session_++, peer_pid(fd));
    auto broker = system_.middleman().spawn_broker(session_broker, this, session);
    session->attach(broker);
    {
      std::lock_guard lock(m_);
      sessions_.emplace(session->id(), broker);
    }
    caf::anon_send(broker, adopt_atom::value, fd);
  }

  // A new object (or the shared one) with one reference, the creating session's.
  std::uint64_t create(SessionId session, const std::string& typeid_, const msgpack::object& init) {
    const TypeidSpec* spec = nullptr;
    if (config_.typeids) {
      auto it = config_.typeids->find(typeid_);
      if (it != config_.typeids->end()) spec = &it->second;
    }
    if (!spec && !is_builtin_kind(typeid_)) throw ValueError("unknown typeid '" + typeid_ + "'");
    std::lock_guard lock(m_);
    bool shared = spec && spec->shared;
    if (shared) {
      auto it = shared_.find(typeid_);
      if (it != shared_.end()) {
        incref(session, it->second);
        return it->second;
      }
    }
    auto id = next_object_++;
    bool builtin = !spec || std::holds_alternative<BuiltinTypeid>(spec->what);
    HostedObject hosted{system_.spawn(object_actor, make_object(typeid_, spec, init)), builtin};
    objects_.emplace(id, ObjectEntry{std::move(hosted), typeid_, 0, shared});
    incref(session, id);
    if (shared) shared_.emplace(typeid_, id);
    return id;
  }

  static std::shared_ptr<SharedObject> make_object(const std::string& typeid_, const TypeidSpec* spec,
                                                   const msgpack::object& init) {
    if (!spec) return make_builtin(typeid_, init);
    if (auto* cls = std::get_if<std::shared_ptr<const ExposedClass>>(&spec->what)) return make_exposed(*cls);
    const auto& builtin = std::get<BuiltinTypeid>(spec->what);
    if (init.via.array.size > 0) return make_builtin(builtin.kind, init);
    auto defaults = unpack_untrusted(builtin.init);
    return make_builtin(builtin.kind, defaults.get());
  }

  void stop_sessions() {
    std::unique_lock lock(m_);
    for (const auto& [id, broker] : sessions_) caf::anon_send(broker, stop_atom::value);
    sessions_done_.wait(lock, [this] { return sessions_.empty(); });
  }

  void stop_actors() {
    std::unordered_map<std::uint64_t, ObjectEntry> objects;
    {
      std::lock_guard lock(m_);
      objects.swap(objects_);
    }
    for (auto& [id, object] : objects) caf::anon_send_exit(object.hosted.actor, caf::exit_reason::user_shutdown);
    objects.clear();
    system_.await_all_actors_done();
  }

  const ServerConfig& config_;
  caf::actor_system_config cfg_;
  caf::actor_system system_;
  InlineUnit inline_unit_;  // used on the multiplexer thread only
  connection::Listener listener_;
  int stop_fd_;
  int session_ended_fd_;  // counts sessions that ended (and freed a descriptor)

  std::mutex m_;
  std::condition_variable sessions_done_;
  std::unordered_map<SessionId, caf::actor> sessions_;  // their brokers
  std::unordered_map<std::uint64_t, ObjectEntry> objects_;
  std::unordered_map<std::string, std::uint64_t> shared_;
  std::unordered_map<SessionId, std::unordered_map<std::uint64_t, std::size_t>> held_;  // references per session
  std::unordered_map<std::uint64_t, Transit> transits_;
  std::uint64_t next_object_ = 1;
  std::uint64_t next_token_ = 1;
  SessionId next_session_ = 1;  // the accept loop's
};

// ---- a session's broker -----------------------------------------------------------------------

// Queues bytes on the scribe, which writes them as the socket drains (data_transferred_msg says
// how far it got).
void write_via_scribe(session_actor* self, std::string_view bytes) {
  auto& st = self->state;
  auto& buf = self->wr_buf(st.handle);
  buf.insert(buf.end(), bytes.begin(), bytes.end());
  st.unwritten += bytes.size();
  self->flush(st.handle);
}

// Writes what the session's outbox holds: straight to the socket while the scribe has nothing
// queued (a reply costs one send, no extra round of the multiplexer), the rest through the
// scribe, which writes it as the socket drains. Whether there was anything to write.
bool flush_outbox(session_actor* self) {
  auto& st = self->state;
  std::string out = st.session->take_outbox();
  if (st.fd < 0 || out.empty()) return false;  // gone (its descriptor number may be another's), or nothing
  std::string_view rest = out;
  if (st.unwritten == 0) {
    while (!rest.empty()) {
      ssize_t n = ::send(st.fd, rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        rest.remove_prefix(static_cast<std::size_t>(n));
      } else if (n < 0 && errno != EINTR) {
        break;  // full (EAGAIN): the scribe takes the rest; gone: its close is on its way
      }
    }
  }
  if (!rest.empty()) write_via_scribe(self, rest);
  return true;
}

void write_framed(session_actor* self, std::string_view message) {
  std::string framed;
  append_frame(framed, message);
  write_via_scribe(self, framed);
}

// Ends the session once: the server hears of it (Server::session_ended) and the broker quits.
// The quit goes through the multiplexer: CAF 0.17.6 never removes a scribe closed in the round
// that added it (notes/caf-0.17.md), and it keeps the reply to a shutdown in the order it came.
void end_session(session_actor* self) {
  auto& st = self->state;
  if (st.ended) return;
  st.ended = true;
  flush_outbox(self);
  st.session->close();
  if (!st.handshake) st.server->session_ended(*st.session);
  st.server->unregister(st.session->id());
  self->backend().post([me = caf::actor_cast<caf::actor>(self)] { caf::anon_send(me, quit_atom::value); });
}

// A handshake message from the client; false when the client failed the handshake.
bool take_handshake_message(session_actor* self, std::string_view message) {
  auto& st = self->state;
  auto reply = st.handshake->take(message);
  if (reply) write_framed(self, *reply);
  switch (st.handshake->current()) {
    case ServerHandshakeSteps::state::under_way:
      return true;
    case ServerHandshakeSteps::state::authenticated:
      st.handshake.reset();
      return true;
    case ServerHandshakeSteps::state::failed:
      return false;
  }
  return false;
}

// A request from an authenticated client; false when the session ends (shutdown).
bool take_request(session_actor* self, std::string_view payload) {
  auto& st = self->state;
  ParsedRequest request;
  try {
    request = parse_request(payload);
  } catch (const Error& e) {
    st.session->deliver(encode_error(errc::error, e.what()));
    return true;
  }
  if (request.id != server_object_id) {
    st.server->dispatch(st.session, std::move(request));
    return true;
  }
  return st.server->serve_server_call(*st.session, request);
}

// Every whole frame that arrived; false when the session ends.
bool take_frames(session_actor* self) {
  auto& st = self->state;
  try {
    while (auto payload = st.frames.next(st.handshake ? max_handshake_message : std::numeric_limits<std::size_t>::max())) {
      bool go_on = st.handshake ? take_handshake_message(self, *payload) : take_request(self, *payload);
      if (!go_on) return false;
    }
  } catch (const Error&) {
    return false;  // a broken frame we cannot resynchronize after
  }
  return true;
}

// Serves the bytes that arrived: every whole frame, then their replies go out. Whether a reply
// went out and the session goes on.
bool serve_bytes(session_actor* self, std::string_view bytes) {
  auto& st = self->state;
  st.frames.append(bytes);
  bool go_on;
  {
    Serving serving(*st.session);
    go_on = take_frames(self);
  }
  if (!go_on) {
    end_session(self);
    return false;
  }
  if (!flush_outbox(self)) return false;
  st.replied = detail::Clock::now();
  return true;
}

// A client making calls back to back (a proxy in a loop) sends its next request a few µs after
// its reply; the multiplexer asleep in epoll would pay a cross-CPU wake-up for it, which costs
// more than the call (notes/caf-0.17.md). So, as every waiting end of our wire does (wire.hpp),
// the broker of such a client looks at its socket for a spin's length after a reply and serves
// what comes without going back to the multiplexer. A client that has not come back within
// the spin is left to the multiplexer until it is quick again. The other sessions wait meanwhile,
// so a client that is always quick gets a few spins' worth of calls, then the multiplexer's next
// round serves the others before it again.
// The longest a hot client's turn lasts before the others get theirs.
detail::Clock::duration hot_turn() { return 4 * detail::spin_duration(); }
// A client back this soon after its reply counts as quick (one that comes back within a spin
// may still reach us through the multiplexer's wake-up, which can take a few spins).
detail::Clock::duration quick_return() { return 4 * detail::spin_duration(); }

void serve_while_hot(session_actor* self) {
  auto& st = self->state;
  if (st.spin_buf.empty()) st.spin_buf.resize(read_chunk);
  auto turn_ends = detail::Clock::now() + hot_turn();
  while (st.hot && !st.ended && st.fd >= 0 && st.unwritten == 0 && detail::Clock::now() < turn_ends) {
    if (!detail::wait_readable(st.fd, detail::deadline_after(detail::spin_duration()))) {
      st.hot = false;
      return;
    }
    ssize_t n = ::recv(st.fd, st.spin_buf.data(), st.spin_buf.size(), MSG_DONTWAIT);
    // EOF or an error: left for the scribe, whose read sees it too and ends the session.
    if (n <= 0) return;
    if (!serve_bytes(self, std::string_view(st.spin_buf.data(), static_cast<std::size_t>(n)))) return;
  }
}

caf::behavior session_broker(session_actor* self, Server* server, std::shared_ptr<Session> session) {
  auto& st = self->state;
  st.server = server;
  st.session = std::move(session);
  return {
      [=](adopt_atom, int fd) {
        auto& st = self->state;
        st.fd = fd;
        st.handle = self->add_scribe(fd);
        self->configure_read(st.handle, caf::io::receive_policy::at_most(read_chunk));
        self->ack_writes(st.handle, true);
        try {
          st.handshake.emplace(st.server->authkey());
        } catch (const Error&) {
          return end_session(self);  // no randomness for a challenge
        }
        write_framed(self, st.handshake->challenge());
        // One deadline for the whole handshake, both halves.
        self->delayed_send(self, handshake_timeout(), handshake_deadline_atom::value);
      },
      [=](const caf::io::new_data_msg& msg) {
        auto& st = self->state;
        if (st.ended) return;
        bool quick = !st.handshake && detail::Clock::now() - st.replied < quick_return();
        if (!serve_bytes(self, std::string_view(msg.buf.data(), msg.buf.size()))) return;
        st.hot = quick;
        serve_while_hot(self);
      },
      [=](const caf::io::data_transferred_msg& msg) { self->state.unwritten = msg.remaining; },
      [=](flush_atom) {
        if (!self->state.ended) flush_outbox(self);
      },
      [=](handshake_deadline_atom) {
        if (self->state.handshake) end_session(self);  // silent or too slow: its time is up
      },
      [=](const caf::io::connection_closed_msg&) {
        self->state.fd = -1;  // CAF closed it
        end_session(self);
      },
      [=](stop_atom) { end_session(self); },
      [=](quit_atom) { self->quit(); },
  };
}

} // namespace

void serve(const ServerConfig& config, const std::function<void(const std::string&)>& ready) {
  Server server(config);
  server.run(ready);
}

} // namespace multiproc::detail::manager
