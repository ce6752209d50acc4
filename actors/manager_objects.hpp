// The objects a manager serves, as plain state machines: no CAF, no sockets, so they can be
// tested alone. Each lives inside one object actor (manager_server.cpp), which feeds it one call
// at a time; that is what serializes operations on a shared object without any lock.
//
// A call carries the session (client connection) it came from and where its reply goes. Blocking
// operations (queue get/put, lock acquire, event/condition/barrier wait, join) park the call and
// answer later; a finite timeout is armed through the Host as a timer, so the server, not the
// client, decides that a wait timed out and nothing is lost in between. A session that closes
// releases what it held (locks) and abandons what it waited for.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/errc.hpp"
#include "multiproc/detail/manager_registry.hpp"
#include "multiproc/object.hpp"

namespace multiproc::detail::manager {

using SessionId = std::uint64_t;

// Where a session's replies go (its socket), and whose session it is. Thread-safe.
class ReplySink {
public:
  explicit ReplySink(SessionId id, std::int32_t peer_pid = 0) : id_(id), peer_pid_(peer_pid) {}
  virtual ~ReplySink() = default;
  SessionId id() const noexcept { return id_; }
  // The client's process (SO_PEERCRED), 0 when unknown (a TCP client).
  std::int32_t peer_pid() const noexcept { return peer_pid_; }
  // payload: an encoded reply (see encode_ok/encode_error).
  virtual void deliver(std::string payload) = 0;

private:
  SessionId id_;
  std::int32_t peer_pid_;
};

struct Call {
  std::shared_ptr<ReplySink> sink;
  std::string method;
  msgpack::object_handle request;  // [id, method, args]
  const msgpack::object& args() const { return request.get().via.array.ptr[2]; }
  SessionId session() const { return sink->id(); }
  std::int32_t peer_pid() const { return sink->peer_pid(); }
};

std::string encode_error(errc code, std::string_view message, std::string_view detail = {});
template <class T>
std::string encode_ok(const T& value) {
  Buffer buf;
  msgpack::packer<Buffer> packer(buf);
  packer.pack_array(2);
  packer.pack(0);
  packer.pack(value);
  return std::move(buf.data);
}
inline void reply_ok(const Call& call) { call.sink->deliver(encode_ok(msgpack::type::nil_t{})); }
template <class T>
void reply_ok(const Call& call, const T& value) {
  call.sink->deliver(encode_ok(value));
}
// The error an exception thrown while serving a call stands for.
std::string encode_exception(std::exception_ptr error);

// What an object may ask of the actor that hosts it.
class Host {
public:
  virtual ~Host() = default;
  // After `delay`, timer_fired(token) runs (inside the actor, between calls).
  virtual void arm_timer(std::chrono::duration<double> delay, std::uint64_t token) = 0;
};

class SharedObject {
public:
  virtual ~SharedObject() = default;
  // Serves one call: replies now, or parks it and replies later. Throwing an mp::Error (or any
  // exception) replies with that error.
  virtual void handle(Call& call, Host& host) = 0;
  virtual void session_closed(SessionId) {}
  virtual void timer_fired(std::uint64_t /*token*/) {}
};

// Python's method names; `kind` as in the server's typeids ("dict", "Queue", ...).
// init: an array of the factory's arguments (maxsize, initial value, ...). ValueError for an
// unknown kind, TypeError for arguments of the wrong type.
std::unique_ptr<SharedObject> make_builtin(std::string_view kind, const msgpack::object& init);
bool is_builtin_kind(std::string_view kind);

// A user's class (BaseManager::register_class): a fresh instance whose methods are called by name.
std::unique_ptr<SharedObject> make_exposed(std::shared_ptr<const ExposedClass> cls);

} // namespace multiproc::detail::manager
