#include "actors/manager_server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "actors/manager_objects.hpp"
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

// One authenticated client connection. Replies come from actors (deliver) or from the session's
// own thread (write); an eventfd tells the session thread that an actor answered, so it can
// block while the actor works instead of spinning against it for the CPU.
class Session final : public ReplySink {
public:
  Session(SessionId id, Connection conn)
      : ReplySink(id), conn_(std::move(conn)), replied_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (replied_ < 0) throw OSError("eventfd failed", errno);
  }
  ~Session() override { ::close(replied_); }

  int fd() const { return conn_.fileno(); }
  Connection& connection() { return conn_; }
  void deliver(std::string payload) override {
    write(payload);
    ::eventfd_write(replied_, 1);
  }
  void write(std::string_view payload) {
    std::lock_guard lock(m_);
    if (closed_) return;
    try {
      write_frame(fd(), payload);
    } catch (const Error&) {
      closed_ = true;  // the client is gone; its session thread sees EOF and cleans up
    }
  }
  // Blocks until an actor replied or the client sent something (or closed).
  void await_reply() {
    pollfd p[2] = {{fd(), POLLIN, 0}, {replied_, POLLIN, 0}};
    while (::poll(p, 2, -1) < 0 && errno == EINTR) {
    }
    eventfd_t ignored;
    ::eventfd_read(replied_, &ignored);
  }
  void close() {
    std::lock_guard lock(m_);
    closed_ = true;
  }
  // Wakes the session thread (its read sees EOF) when the server stops.
  void interrupt() { ::shutdown(fd(), SHUT_RDWR); }

private:
  Connection conn_;
  int replied_;
  std::mutex m_;
  bool closed_ = false;
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
  explicit Server(const ServerConfig& config)
      : config_(config), system_(sharing_config(cfg_)), listener_(config.address),
        stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (stop_fd_ < 0) throw OSError("eventfd failed", errno);
  }
  ~Server() { ::close(stop_fd_); }

  void run(const std::function<void(const std::string&)>& ready) {
    ready(listener_.address());
    accept_loop();
    listener_.close();
    stop_sessions();
    stop_actors();
  }

private:
  void accept_loop() {
    pollfd p[2] = {{listener_.fileno(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    for (;;) {
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        throw OSError("poll failed in the manager server", errno);
      }
      if (p[1].revents) return;
      if (!p[0].revents) continue;
      try {
        start_session(listener_.accept());
      } catch (const Error&) {
        // A client that vanished between connect and accept is no reason to stop serving.
      }
    }
  }

  void start_session(Connection conn) {
    std::lock_guard lock(m_);
    ++live_sessions_;
    std::thread([this, conn = std::move(conn)]() mutable {
      serve_connection(std::move(conn));
      std::lock_guard lock(m_);
      --live_sessions_;
      sessions_done_.notify_all();
    }).detach();
  }

  // Authenticates (the challenge both ways), then serves requests until EOF or shutdown. The
  // session is registered first, so that stopping the server also interrupts a handshake.
  void serve_connection(Connection conn) {
    auto session = std::make_shared<Session>(next_session_++, std::move(conn));
    auto it = register_session(session);
    if (authenticate(session->connection())) {
      serve_requests(*session, session);
      session->close();
      broadcast_closed(session->id());
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
    return true;
  }

  void serve_requests(Session& session, const std::shared_ptr<Session>& sink) {
    for (;;) {
      wait_readable(session.fd(), std::nullopt);
      std::string payload;
      try {
        payload = read_frame(session.fd());
      } catch (const Error&) {
        return;  // EOF, or a broken frame we cannot resynchronize after
      }
      ParsedRequest request;
      try {
        request = parse_request(payload);
      } catch (const Error& e) {
        session.write(encode_error(errc::error, e.what()));
        continue;
      }
      if (request.id == server_object_id) {
        if (!serve_server_call(session, request)) return;
      } else if (dispatch(session, sink, std::move(request))) {
        session.await_reply();
      }
    }
  }

  // Hands an object call to its actor; false (after replying the error) for an unknown object.
  bool dispatch(Session& session, const std::shared_ptr<Session>& sink, ParsedRequest request) {
    caf::actor target;
    {
      std::lock_guard lock(m_);
      auto it = objects_.find(request.id);
      if (it != objects_.end()) target = it->second;
    }
    if (!target) {
      session.write(encode_error(errc::key_error, "the manager has no object " + std::to_string(request.id)));
      return false;
    }
    auto call = std::make_shared<Call>(Call{sink, std::move(request.method), std::move(request.handle)});
    caf::anon_send(target, call_atom::value, std::move(call));
    return true;
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
        session.write(encode_ok(id));
      } else if (request.method == "ping") {
        session.write(encode_ok(msgpack::type::nil_t{}));
      } else if (request.method == "shutdown") {
        session.write(encode_ok(msgpack::type::nil_t{}));
        ::eventfd_write(stop_fd_, 1);
        return false;
      } else {
        throw AttributeError("the manager has no server method '" + request.method + "'");
      }
    } catch (const msgpack::type_error&) {
      session.write(encode_error(errc::type_error, "create() takes a typeid string and an argument array"));
    } catch (...) {
      session.write(encode_exception(std::current_exception()));
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

  void broadcast_closed(SessionId id) {
    std::lock_guard lock(m_);
    for (const auto& [oid, actor] : objects_) caf::anon_send(actor, closed_atom::value, id);
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
