#include "actors/manager_server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "actors/manager_objects.hpp"
#include "actors/runtime.hpp"
#include "manager_socket.hpp"
#include "multiproc/connection.hpp"
#include "multiproc/detail/manager_client.hpp"
#include "multiproc/detail/wire.hpp"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<multiproc::detail::manager::Call>)

namespace multiproc::detail::manager {

namespace {

using call_atom = caf::atom_constant<caf::atom("call")>;
using closed_atom = caf::atom_constant<caf::atom("closed")>;
using timer_atom = caf::atom_constant<caf::atom("timer")>;

// A client that stops reading its replies must not wedge an actor's worker thread forever.
constexpr int reply_send_timeout_s = 10;
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

// One authenticated client connection. Replies are written by whichever thread runs the object's
// actor (usually the session's own thread, see InlineUnit), or by the session thread itself.
class Session final : public ReplySink {
public:
  Session(SessionId id, Connection conn) : ReplySink(id), conn_(std::move(conn)) {}

  int fd() const { return conn_.fileno(); }
  Connection& connection() { return conn_; }
  void deliver(std::string payload) override {
    std::lock_guard lock(m_);
    if (closed_) return;
    try {
      write_frame(fd(), payload);
    } catch (const Error&) {
      closed_ = true;  // the client is gone; its session thread sees EOF and cleans up
    }
  }
  void close() {
    std::lock_guard lock(m_);
    closed_ = true;
  }
  // Wakes the session thread (its read sees EOF) when the server stops.
  void interrupt() { ::shutdown(fd(), SHUT_RDWR); }

private:
  Connection conn_;
  std::mutex m_;
  bool closed_ = false;
};

// The session thread as a CAF execution unit: an object actor that a call wakes up runs right
// here, on the thread that read the call, instead of waiting for a scheduler thread to wake up
// (a cross-CPU wake-up costs more than the call itself, notes/caf-0.17.md). The actor's mailbox
// still serializes everything: a call to an actor already running elsewhere just queues there.
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

caf::actor_system_config& sharing_config(caf::actor_system_config& cfg) {
  // Work-sharing wakes idle workers through a condition variable instead of polling (about
  // 150 µs per idle round trip with work-stealing here, notes/caf-0.17.md §7).
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", std::size_t{2});
  return cfg;
}

// ---- the server -------------------------------------------------------------------------------

class Server {
public:
  // Besides the actor system's threads, the server needs one per session: it shows that the
  // system and a first session can run before it listens.
  explicit Server(const ServerConfig& config)
      : config_(config), system_(actors::startable(sharing_config(cfg_), 1)), listener_(config.address),
        stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
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

private:
  void accept_loop() {
    // A negative descriptor is ignored by poll: owner_fd when there is none, the listener while
    // the server is out of descriptors or threads, session_ended_fd_ while it is not.
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
      try {
        start_session(listener_.accept());
      } catch (const OSError& e) {
        if (!out_of_resources(e.error_number())) continue;
        drain(session_ended_fd_);
        p[listener].fd = -1;
        p[session_ended].fd = session_ended_fd_;
        timeout_ms = out_of_resources_pause_ms;
      } catch (const Error&) {
        // A client that vanished between connect and accept is no reason to stop serving.
      }
    }
  }

  static bool out_of_resources(int err) {
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == EAGAIN;
  }

  static void drain(int event_fd) {
    eventfd_t ignored;
    ::eventfd_read(event_fd, &ignored);
  }

  // OSError (EAGAIN) when no thread can be started for it; the connection is closed then.
  void start_session(Connection conn) {
    std::lock_guard lock(m_);
    std::thread session;
    try {
      session = std::thread([this, conn = std::move(conn)]() mutable {
        serve_connection(std::move(conn));
        ::eventfd_write(session_ended_fd_, 1);  // its descriptor is free again (and soon its thread)
        std::lock_guard lock(m_);
        --live_sessions_;
        sessions_done_.notify_all();
      });
    } catch (const std::system_error& e) {
      throw OSError(std::string("cannot start a manager session thread: ") + e.code().message(),
                    e.code().value());
    }
    ++live_sessions_;
    session.detach();
  }

  // Authenticates (the challenge both ways), then serves requests until EOF or shutdown. The
  // session is registered first, so that stopping the server also interrupts a handshake.
  void serve_connection(Connection conn) {
    auto session = std::make_shared<Session>(next_session_++, std::move(conn));
    auto it = register_session(session);
    if (authenticate(session->connection())) {
      InlineUnit unit(system_);
      try {
        serve_requests(*session, session, unit);
      } catch (const std::exception&) {
        // A failing socket (poll, an oversized reply): this client's session ends, nobody else's.
      }
      session->close();
      broadcast_closed(session->id(), unit);
    }
    std::lock_guard lock(m_);
    sessions_.erase(it);
  }

  bool authenticate(Connection& conn) {
    try {
      connection::deliver_challenge(conn, config_.authkey);
      connection::answer_challenge(conn, config_.authkey);
    } catch (const Error&) {
      return false;  // wrong key, garbage or silence: the client learns it from its own handshake
    }
    timeval tv{reply_send_timeout_s, 0};
    ::setsockopt(conn.fileno(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    keep_alive_if_tcp(conn.fileno());  // a vanished client host still releases its locks
    return true;
  }

  void serve_requests(Session& session, const std::shared_ptr<Session>& sink, InlineUnit& unit) {
    FrameReader reader;
    for (;;) {
      std::optional<std::string_view> payload;
      try {
        payload = reader.next(session.fd());
      } catch (const Error&) {
        return;  // a broken frame we cannot resynchronize after
      }
      if (!payload) return;  // the client closed
      ParsedRequest request;
      try {
        request = parse_request(*payload);
      } catch (const Error& e) {
        session.deliver(encode_error(errc::error, e.what()));
        continue;
      }
      if (request.id != server_object_id) {
        dispatch(sink, std::move(request), unit);
      } else if (!serve_server_call(session, request)) {
        return;
      }
    }
  }

  // Hands an object call to its actor (KeyError for an unknown object).
  void dispatch(const std::shared_ptr<Session>& sink, ParsedRequest request, InlineUnit& unit) {
    caf::actor target;
    {
      std::lock_guard lock(m_);
      auto it = objects_.find(request.id);
      if (it != objects_.end()) target = it->second;
    }
    if (!target) {
      sink->deliver(encode_error(errc::key_error, "the manager has no object " + std::to_string(request.id)));
      return;
    }
    auto call = std::make_shared<Call>(Call{sink, std::move(request.method), std::move(request.handle)});
    unit.send(target, caf::make_message(call_atom::value, std::move(call)));
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
        auto id = create(args.via.array.ptr[0].as<std::string>(), args.via.array.size > 1 ? args.via.array.ptr[1] : no_args);
        session.deliver(encode_ok(id));
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

  std::uint64_t create(const std::string& typeid_, const msgpack::object& init) {
    const TypeidSpec* spec = nullptr;
    if (config_.typeids) {
      auto it = config_.typeids->find(typeid_);
      if (it != config_.typeids->end()) spec = &it->second;
    }
    if (!spec && !is_builtin_kind(typeid_)) throw ValueError("unknown typeid '" + typeid_ + "'");
    std::lock_guard lock(m_);
    if (spec && spec->shared) {
      auto it = shared_.find(typeid_);
      if (it != shared_.end()) return it->second;
    }
    auto id = next_object_++;
    objects_.emplace(id, system_.spawn(object_actor, make_object(typeid_, spec, init)));
    if (spec && spec->shared) shared_.emplace(typeid_, id);
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

  std::list<std::shared_ptr<Session>>::iterator register_session(std::shared_ptr<Session> session) {
    std::lock_guard lock(m_);
    return sessions_.insert(sessions_.end(), std::move(session));
  }

  void broadcast_closed(SessionId id, InlineUnit& unit) {
    std::vector<caf::actor> targets;
    {
      std::lock_guard lock(m_);
      for (const auto& [oid, actor] : objects_) targets.push_back(actor);
    }
    for (const auto& actor : targets) unit.send(actor, caf::make_message(closed_atom::value, id));
  }

  void stop_sessions() {
    std::unique_lock lock(m_);
    for (const auto& s : sessions_) s->interrupt();
    sessions_done_.wait(lock, [this] { return live_sessions_ == 0; });
  }

  void stop_actors() {
    std::unordered_map<std::uint64_t, caf::actor> objects;
    {
      std::lock_guard lock(m_);
      objects.swap(objects_);
    }
    for (auto& [id, actor] : objects) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    objects.clear();
    system_.await_all_actors_done();
  }

  const ServerConfig& config_;
  caf::actor_system_config cfg_;
  caf::actor_system system_;
  connection::Listener listener_;
  int stop_fd_;
  int session_ended_fd_;  // counts sessions that ended (and freed a descriptor and a thread)

  std::mutex m_;
  std::condition_variable sessions_done_;
  std::size_t live_sessions_ = 0;
  std::list<std::shared_ptr<Session>> sessions_;
  std::unordered_map<std::uint64_t, caf::actor> objects_;
  std::unordered_map<std::string, std::uint64_t> shared_;
  std::uint64_t next_object_ = 1;
  std::atomic<SessionId> next_session_{1};
};

} // namespace

void serve(const ServerConfig& config, const std::function<void(const std::string&)>& ready) {
  Server server(config);
  server.run(ready);
}

} // namespace multiproc::detail::manager
