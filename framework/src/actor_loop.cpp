#include "actor_loop.hpp"

#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include "actor_socket.hpp"
#include "launch.hpp"
#include "log.hpp"

namespace multiproc::detail {

namespace {

actor_loop* g_current = nullptr;
// A child forked by an actor (a Process it starts, an actor it spawns) is not that actor.
void leave_actor_in_child() { g_current = nullptr; }

std::string current_exception_type_name() {
  try {
    throw;
  } catch (const std::exception& e) {
    return demangle(typeid(e).name());
  } catch (...) {
    return "unknown exception";
  }
}

std::string current_exception_message() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (const SystemExit& e) {
    return "SystemExit(" + std::to_string(e.code) + ")";
  } catch (...) {
    return "an exception of unknown type";
  }
}

void send_notice(int fd, int exitcode) {
  auto frame = control_frame(actor_frame::exit_notice, 0, exitcode);
  std::uint32_t n = static_cast<std::uint32_t>(frame.size() - frame_reserve);
  for (int i = 3; i >= 0; --i, n >>= 8) frame[static_cast<std::size_t>(i)] = static_cast<char>(n & 0xff);
  // Never wait for a peer that does not read: the notice is a courtesy, EOF follows anyway.
  (void)::send(fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

} // namespace

actor_loop* current_actor() { return g_current; }

actor_loop::actor_loop(ActorRef self, int listen_fd, int name_fd)
    : self_(std::move(self)), listen_fd_(listen_fd), name_fd_(name_fd) {
  // Children this actor forks close these, so that its address and name die with it.
  register_internal_fd(listen_fd_);
  if (name_fd_ >= 0) register_internal_fd(name_fd_);
  static std::once_flag once;
  std::call_once(once, [] { on_fork_child(leave_actor_in_child); });
  g_current = this;
}

actor_loop::~actor_loop() {
  if (g_current == this) g_current = nullptr;
}

int actor_loop::run(std::function<Behavior(ActorContext&)>& init) {
  become_loop_thread();
  try {
    ActorContext ctx(*this);
    Behavior behavior = init(ctx);
    handlers_ = std::move(behavior.handlers_);
    for (std::size_t i = 0; i < handlers_.size(); ++i) by_type_.emplace(handlers_[i].type_id, i);
    serve();
  } catch (const SystemExit& e) {
    end(e.code);
    throw;
  } catch (...) {
    end(1);
    throw;
  }
  end(*quit_);
  return *quit_;
}

void actor_loop::serve() {
  while (!quit_) {
    if (!local_.empty()) {
      std::string payload = std::move(local_.front());
      local_.pop_front();
      handle(payload, nullptr);
      flush_posted_by_loop();
      continue;
    }
    fire_due_timers();
    flush_posted_by_loop();
    if (!local_.empty() || quit_) continue;
    wait_for_input();
    if (listen_fd_ >= 0 && poll_set_[0].revents) accept_from(listen_fd_);
    if (name_fd_ >= 0 && poll_set_[1].revents) accept_from(name_fd_);
    std::size_t first = 2;
    for (std::size_t i = 0; i < clients_.size() && !quit_; ++i)
      if (!poll_set_dirty_ && poll_set_[first + i].revents) read_client(i);
    check_watches();
  }
}

void actor_loop::rebuild_poll_set() {
  poll_set_.clear();
  poll_set_.push_back({listen_fd_, POLLIN, 0});
  poll_set_.push_back({name_fd_, POLLIN, 0});  // -1 is ignored by poll
  for (auto& c : clients_) poll_set_.push_back({c->fd, POLLIN, 0});
  for (auto& [address, w] : watches_) poll_set_.push_back({w.peer->fd(), POLLIN, 0});
  poll_set_dirty_ = false;
}

// Spins (yielding) for the library's spin time before blocking, as every wait in multiproc
// does: a blocked actor costs each message a cross-CPU wake-up.
void actor_loop::wait_for_input() {
  if (poll_set_dirty_) rebuild_poll_set();
  auto spin_end = Clock::now() + spin_duration();
  for (;;) {
    int timeout_ms = 0;
    bool spinning = Clock::now() < spin_end;
    if (!spinning) {
      timeout_ms = -1;
      if (!timers_.empty()) {
        auto left = timers_.begin()->first - Clock::now();
        timeout_ms = static_cast<int>(
            std::max<long>(0, std::chrono::ceil<std::chrono::milliseconds>(left).count()));
      }
    }
    int r = ::poll(poll_set_.data(), poll_set_.size(), timeout_ms);
    if (r > 0) return;
    if (r < 0 && errno != EINTR) throw OSError(std::string("poll failed in an actor: ") + std::strerror(errno), errno);
    if (!spinning) {
      if (r == 0) return;  // a timer is due
      continue;
    }
    ::sched_yield();
  }
}

void actor_loop::accept_from(int listen_fd) {
  int fd = accept_peer(listen_fd);
  if (fd < 0) return;
  if (!peer_is_same_user(fd)) {
    log(LogLevel::warning, "actor {} refused a peer running as another user", self_.address());
    ::close(fd);
    return;
  }
  register_internal_fd(fd);
  clients_.push_back(std::make_unique<client>(client{fd, {}, {}}));
  poll_set_dirty_ = true;
}

void actor_loop::read_client(std::size_t index) {
  client& c = *clients_[index];
  try {
    if (c.in.fill(c.fd) == frame_reader::fill_result::eof) return close_client(index);
  } catch (const Error& e) {
    log(LogLevel::warning, "actor {} dropped a peer it could not read: {}", self_.address(), e.what());
    return close_client(index);
  }
  while (!quit_) {
    std::optional<std::string_view> frame;
    try {
      frame = c.in.next();
    } catch (const Error& e) {
      // A malformed length: the stream cannot be resynchronised, so this peer is dropped.
      log(LogLevel::warning, "actor {} dropped a peer that sent a bad frame: {}", self_.address(), e.what());
      return close_client(index);
    }
    if (!frame) break;
    handle(*frame, &c);  // what a handler throws ends the actor (run), whatever its type
    flush_posted_by_loop();
  }
}

void actor_loop::close_client(std::size_t index) {
  unregister_internal_fd(clients_[index]->fd);
  ::close(clients_[index]->fd);
  clients_.erase(clients_.begin() + static_cast<std::ptrdiff_t>(index));
  poll_set_dirty_ = true;
}

const std::string& actor_loop::route_of(const client* from) {
  static const std::string none;
  return from ? from->route : none;
}

void actor_loop::handle(std::string_view payload, client* from) {
  if (payload.size() < actor_header) {
    log(LogLevel::warning, "actor {} dropped a frame of {} bytes, too short for a message", self_.address(),
        payload.size());
    return;
  }
  switch (frame_kind(payload)) {
    case actor_frame::send:
    case actor_frame::request: return dispatch(payload, from);
    case actor_frame::stop:
      if (!quit_) quit_ = 0;
      return;
    case actor_frame::link:
      try {
        link(decode<ActorRef>(frame_body(payload)), false);
      } catch (const Error& e) {
        log(LogLevel::warning, "actor {} dropped a bad link request: {}", self_.address(), e.what());
      }
      return;
    case actor_frame::whoami: {
      route_scope along(route_of(from));
      auto frame = control_frame(actor_frame::reply, frame_request_id(payload), self_);
      return answer(from, frame);
    }
    case actor_frame::routed_from:
      try {
        if (from) from->route = decode<std::string>(frame_body(payload));
      } catch (const Error& e) {
        log(LogLevel::warning, "actor {} dropped a bad route: {}", self_.address(), e.what());
      }
      return;
    default:
      log(LogLevel::warning, "actor {} dropped a frame of unknown kind {}", self_.address(),
          static_cast<int>(frame_kind(payload)));
  }
}

void actor_loop::dispatch(std::string_view payload, client* from) {
  bool wants_answer = frame_kind(payload) == actor_frame::request && from != nullptr;
  auto request_id = frame_request_id(payload);
  auto it = by_type_.find(frame_type_id(payload));
  if (it == by_type_.end()) {
    log(LogLevel::warning, "actor {} has no handler for message type id {:#x}; dropped", self_.address(),
        frame_type_id(payload));
    if (wants_answer)
      answer_error(from, request_id, errc::type_error, "TypeError",
                   "actor " + self_.address() + " has no handler for this message type");
    return;
  }
  auto& entry = handlers_[it->second];
  msgpack::object_handle body;
  try {
    body = unpack_untrusted(frame_body(payload));
    if (wants_answer) {
      out_.data.assign(actor_body_at, '\0');
      out_.data[actor_header_at] = static_cast<char>(actor_frame::reply);
      std::memcpy(out_.data.data() + actor_header_at + 9, &request_id, 8);
    }
  } catch (const Error& e) {
    log(LogLevel::warning, "actor {} dropped a message of type {}: {}", self_.address(), entry.type_name, e.what());
    if (wants_answer) answer_error(from, request_id, errc::type_error, "TypeError", e.what());
    return;
  }
  try {
    route_scope along(route_of(from));  // refs in the answer, for a peer on another host
    entry.invoke(body.get(), wants_answer ? &out_ : nullptr);
  } catch (const bad_message& e) {
    log(LogLevel::warning, "actor {} dropped a message of type {}: {}", self_.address(), entry.type_name, e.what());
    if (wants_answer) answer_error(from, request_id, errc::type_error, "TypeError", e.what());
    return;
  } catch (...) {
    // Let it crash: the requester learns what was thrown, then run() ends the actor.
    if (wants_answer)
      answer_error(from, request_id, errc::remote_error, current_exception_type_name(), current_exception_message());
    throw;
  }
  if (wants_answer) answer(from, out_.data);
}

void actor_loop::answer(client* from, std::string& frame) {
  if (!from) return;
  try {
    write_reserved_frame(from->fd, frame);
  } catch (const OSError&) {
    // The requester is gone; its connection closes at its EOF.
  }
}

void actor_loop::answer_error(client* from, std::uint64_t request_id, errc code, const std::string& type,
                              const std::string& message) {
  auto frame = control_frame(actor_frame::reply_error, request_id,
                             std::make_tuple(static_cast<int>(code), type, message));
  frame[actor_header_at] = static_cast<char>(actor_frame::reply_error);
  answer(from, frame);
}

void actor_loop::quit(int exitcode) {
  if (!quit_) quit_ = exitcode;
}

// Adds `kind` (monitor and/or link) to the watch on `other`; an actor that has already ended is
// reported at once instead. The peer it is watched through, or nullptr when it had ended.
std::shared_ptr<actor_peer> actor_loop::watch_peer(const ActorRef& other, watch kind) {
  auto peer = peer_for(other);
  if (!peer) {
    watched_ended(other, kind, learn_exit_code(other, std::nullopt));
    return nullptr;
  }
  auto& w = watches_[other.address()];
  w.peer = peer;
  w.monitor = w.monitor || kind.monitor;
  w.link = w.link || kind.link;
  poll_set_dirty_ = true;
  return peer;
}

void actor_loop::monitor(const ActorRef& other) {
  if (!other || other == self_) return;
  watch_peer(other, watch{nullptr, true, false});
}

void actor_loop::link(const ActorRef& other, bool tell_other) {
  if (!other || other == self_) return;
  auto peer = watch_peer(other, watch{nullptr, false, true});
  if (peer && tell_other) {
    auto frame = control_frame(actor_frame::link, 0, self_);
    peer->write(frame);
  }
}

void actor_loop::schedule(const ActorRef& to, std::string frame, std::chrono::nanoseconds delay) {
  timers_.emplace(Clock::now() + std::chrono::duration_cast<Clock::duration>(delay), timer{to, std::move(frame)});
}

void actor_loop::fire_due_timers() {
  auto now = Clock::now();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto node = timers_.extract(timers_.begin());
    actor_send(node.mapped().to, node.mapped().frame);
  }
}

void actor_loop::check_watches() {
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (!it->second.peer->pump()) {
      ++it;
      continue;
    }
    auto node = watches_.extract(it++);
    poll_set_dirty_ = true;
    forget_peer(*node.mapped().peer);
    watched_ended(node.mapped().peer->ref(), node.mapped(), node.mapped().peer->exitcode());
  }
}

void actor_loop::watched_ended(const ActorRef& ref, const watch& w, int exitcode) {
  if (w.monitor) deliver_local(make_frame(actor_frame::send, Down{ref, exitcode}));
  if (!w.link) return;
  if (trap_exit_) {
    deliver_local(make_frame(actor_frame::send, Exit{ref, exitcode}));
  } else if (exitcode != 0) {
    log(LogLevel::info, "actor {} ends with its link {} (exit code {})", self_.address(), ref.address(), exitcode);
    quit(exitcode > 0 ? exitcode : 1);
  }
}

void actor_loop::deliver_local(const std::string& frame) { local_.push_back(frame.substr(frame_reserve)); }

void actor_loop::end(int exitcode) {
  flush_posted_by_loop();
  for (int* fd : {&listen_fd_, &name_fd_}) {
    if (*fd < 0) continue;
    unregister_internal_fd(*fd);
    ::close(*fd);
    *fd = -1;
  }
  for (auto& c : clients_) {
    send_notice(c->fd, exitcode);
    unregister_internal_fd(c->fd);
    ::close(c->fd);
  }
  clients_.clear();
  watches_.clear();
  timers_.clear();
  local_.clear();
}

} // namespace multiproc::detail
