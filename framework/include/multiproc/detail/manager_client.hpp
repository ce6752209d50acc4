// The client half of the manager protocol: what a proxy sends and how it waits for the answer.
//
// A request is one frame holding the MessagePack array [object id, method name, [args...]];
// object id 0 addresses the server itself ("create", "shutdown"). The reply is [0, value] or
// [errc, message, detail], turned into the typed exception by raise() on this side.
// Each thread of each process talks to a manager over its own connection, opened (and
// authenticated) on first use and reopened after a fork, so proxies copied into children,
// pool workers or other threads just work. A dead server makes every call throw Error at once.
//
// References, as CPython counts them: a process holds one server reference per object it has
// proxies for (a ProxyHold, shared by the proxy copies; the last one gives it back), on a
// connection of the process's own that lives as long as the process, so its end (exit, crash,
// SIGKILL) gives back whatever the process still held. A proxy crossing into another process
// carries a transit token, a reference the sender took for the receiver; the receiver claims it
// on unpack. A forked child claims the references its parent took for it (InheritedReferences).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/wire.hpp"

namespace multiproc::detail {

// Where a manager listens and the key that opens it.
struct ManagerEndpoint {
  std::string address;
  std::string authkey;
};

// This process's reference to one manager object (manager_refs.cpp).
struct ProxyHold;

// What a proxy is: a manager, an object it serves, and this process's reference to it (none: a
// proxy that keeps nothing alive, such as one naming an id by hand).
struct ProxyRef {
  std::shared_ptr<const ManagerEndpoint> endpoint;
  std::uint64_t id = 0;
  std::shared_ptr<const ProxyHold> hold = {};
};

// Sends a framed "create" request on this process's connection: the new object, with the
// reference the server gave this process for it.
ProxyRef create_held(std::shared_ptr<const ManagerEndpoint> endpoint, std::string& create_request);
// A forked child's first use of a manager: claims the references its parent took for it there.
void claim_inherited_references(const ManagerEndpoint& endpoint);
// A reference for the process that will unpack ref (0 for a proxy without a manager); pinned
// while a manager call's arguments are packed (the proxy goes into a shared object).
std::uint64_t take_transit_token(const ProxyRef& ref);
// A proxy unpacked in this process: claims token (or takes a reference of its own); without a
// hold if the object is gone.
ProxyRef claim_unpacked(std::shared_ptr<const ManagerEndpoint> endpoint, std::uint64_t id, std::uint64_t token);

// While alive, proxies packed by this thread go into a manager call's arguments.
class PackingManagerArgs {
public:
  PackingManagerArgs();
  ~PackingManagerArgs();
  PackingManagerArgs(const PackingManagerArgs&) = delete;
  PackingManagerArgs& operator=(const PackingManagerArgs&) = delete;

private:
  bool previous_;
};

// Held across fork() by the forking thread: references for every proxy the child inherits, taken
// before the fork (so the parent dropping its proxies cannot free them), claimed by the child on
// its first use of that manager or at its exit, and given back with the parent's connection if
// the child never claims them (it was SIGKILLed before). in_child() in the child.
class InheritedReferences {
public:
  InheritedReferences();
  void in_child();

private:
  std::unique_lock<std::mutex> lock_;
  std::vector<std::pair<std::shared_ptr<const ManagerEndpoint>, std::uint64_t>> tokens_;
};

inline constexpr std::uint64_t server_object_id = 0;

// Sends one framed request (frame_reserve header bytes first) on this thread's connection to the
// manager and returns the reply's value. Raises the reply's error; Error when the server is gone.
msgpack::object_handle manager_exchange(const ManagerEndpoint& endpoint, std::string& framed_request);

// The same on a connection of its own, opened for this request and closed after it (shutdown,
// which must work even from a static destructor, after thread_locals are gone).
msgpack::object_handle manager_exchange_once(const ManagerEndpoint& endpoint, std::string& framed_request);

// The same on this process's connection to the manager: the one its references live on.
// Thread-safe (one request at a time). Error for a manager that was shut down, unless creating
// (an object of a new server at that address).
msgpack::object_handle manager_exchange_process(const ManagerEndpoint& endpoint, std::string& framed_request,
                                                bool creating = false);

// Drops this thread's connection to the manager at address (it reconnects on next use).
void forget_manager_connection(const std::string& address);
// A manager that was shut down: proxies dropped after it give nothing back (no connection tried).
void forget_manager_process_connection(const std::string& address);

// A timeout as the server takes it: seconds, nil for "block forever".
template <class Rep, class Period>
double timeout_seconds(std::chrono::duration<Rep, Period> timeout) {
  double s = std::chrono::duration<double>(timeout).count();
  return s < 0 ? 0.0 : s;
}
using NoTimeout = std::optional<double>;  // std::nullopt travels as nil

template <class... A>
std::string encode_manager_request(std::uint64_t id, std::string_view method, const A&... args) {
  Buffer buf;
  buf.data.resize(frame_reserve);
  msgpack::packer<Buffer> packer(buf);
  packer.pack_array(3);
  packer.pack(id);
  packer.pack(method);
  packer.pack_array(static_cast<std::uint32_t>(sizeof...(A)));
  PackingManagerArgs into_manager;
  (packer.pack(args), ...);
  return std::move(buf.data);
}

// Calls method on the object behind ref and converts the result to R (TypeError if it is not one).
template <class R, class... A>
R manager_call(const ProxyRef& ref, std::string_view method, const A&... args) {
  if (!ref.endpoint) throw ValueError("this proxy refers to no manager object (default-constructed)");
  std::string request = encode_manager_request(ref.id, method, args...);
  auto reply = manager_exchange(*ref.endpoint, request);
  if constexpr (!std::is_void_v<R>) return convert<R>(reply.get());
}

} // namespace multiproc::detail
