// The client half of the manager protocol: what a proxy sends and how it waits for the answer.
//
// A request is one frame holding the MessagePack array [object id, method name, [args...]];
// object id 0 addresses the server itself ("create", "shutdown"). The reply is [0, value] or
// [errc, message, detail], turned into the typed exception by raise() on this side.
// Each thread of each process talks to a manager over its own connection, opened (and
// authenticated) on first use and reopened after a fork, so proxies copied into children,
// pool workers or other threads just work. A dead server makes every call throw Error at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/wire.hpp"

namespace multiproc::detail {

// Where a manager listens and the key that opens it.
struct ManagerEndpoint {
  std::string address;
  std::string authkey;
};

// What a proxy is: a manager and an object it serves.
struct ProxyRef {
  std::shared_ptr<const ManagerEndpoint> endpoint;
  std::uint64_t id = 0;
};

inline constexpr std::uint64_t server_object_id = 0;

// Sends one framed request (frame_reserve header bytes first) on this thread's connection to the
// manager and returns the reply's value. Raises the reply's error; Error when the server is gone.
msgpack::object_handle manager_exchange(const ManagerEndpoint& endpoint, std::string& framed_request);

// The same on a connection of its own, opened for this request and closed after it (shutdown,
// which must work even from a static destructor, after thread_locals are gone).
msgpack::object_handle manager_exchange_once(const ManagerEndpoint& endpoint, std::string& framed_request);

// Drops this thread's connection to the manager at address (it reconnects on next use).
void forget_manager_connection(const std::string& address);

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
