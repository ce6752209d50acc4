// What actor.hpp's templates need: a message type's id, the layout of an actor frame, and the
// type-erased handlers a Behavior is made of.
//
// An actor frame is a wire frame (wire.hpp) whose payload is
//   [kind: 1 byte][type id: 8 bytes][request id: 8 bytes][MessagePack body]
// in host byte order (actors only talk on one host). The request id is 0 for a plain send.
//
// A message type's id is the 64-bit FNV-1a hash of its name: the name the compiler gives the
// type (from __PRETTY_FUNCTION__, e.g. "app::Ping"), or, when the type declares
//   static constexpr std::string_view actor_type_name = "app.Ping";
// that name. Every process of one program computes the same id; processes built by another
// compiler agree on types that declare actor_type_name.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/wire.hpp"

namespace multiproc::detail {

enum class actor_frame : char {
  send = 0,         // a message; no reply
  request = 1,      // a message; the reply carries the same request id
  reply = 2,        // body: the handler's return value (nil for void)
  reply_error = 3,  // body: [errc, type name, message]
  stop = 4,         // end after the current message
  link = 5,         // body: the ActorRef that links to the receiver
  exit_notice = 6,  // body: the sender's exit code, written to every peer as it ends
  whoami = 7,       // a request for the actor's own ActorRef (whereis)
  routed_from = 8,  // body: "node!route", the way back to the actor's host from this peer's (actor_node.hpp)
};

inline constexpr std::size_t actor_header = 1 + 8 + 8;
// Where the actor header starts inside a buffer that reserves room for the wire header.
inline constexpr std::size_t actor_header_at = frame_reserve;
inline constexpr std::size_t actor_body_at = frame_reserve + actor_header;

constexpr std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

template <class T>
constexpr std::string_view compiler_type_name() {
  std::string_view p = __PRETTY_FUNCTION__;
  // GCC: "... [with T = app::Ping; std::string_view = ...]"; Clang: "... [T = app::Ping]".
  auto start = p.find("T = ") + 4;
  auto end = p.find_first_of(";]", start);
  return p.substr(start, end - start);
}

template <class T>
concept names_itself = requires {
  { T::actor_type_name } -> std::convertible_to<std::string_view>;
};

template <class T>
constexpr std::string_view message_type_name() {
  if constexpr (names_itself<T>) {
    return T::actor_type_name;
  } else {
    return compiler_type_name<T>();
  }
}

template <class T>
constexpr std::uint64_t message_type_id() {
  return fnv1a(message_type_name<T>());
}

// A buffer holding a whole actor frame (wire header space, actor header, MessagePack body).
template <class M>
std::string make_frame(actor_frame kind, const M& msg) {
  Buffer buf;
  buf.data.resize(actor_body_at);
  buf.data[actor_header_at] = static_cast<char>(kind);
  std::uint64_t id = message_type_id<M>();
  std::memcpy(buf.data.data() + actor_header_at + 1, &id, 8);
  pack_into(buf, msg);
  return std::move(buf.data);
}

// ---- handlers -----------------------------------------------------------------------------

template <class Sig>
struct handler_signature;
template <class R, class A>
struct handler_signature<R (*)(A)> {
  using result = R;
  using message = std::remove_cvref_t<A>;
};
template <class R, class A>
struct handler_signature<R (*)(A) noexcept> : handler_signature<R (*)(A)> {};
template <class C, class R, class A>
struct handler_signature<R (C::*)(A)> : handler_signature<R (*)(A)> {};
template <class C, class R, class A>
struct handler_signature<R (C::*)(A) const> : handler_signature<R (*)(A)> {};
template <class C, class R, class A>
struct handler_signature<R (C::*)(A) noexcept> : handler_signature<R (*)(A)> {};
template <class C, class R, class A>
struct handler_signature<R (C::*)(A) const noexcept> : handler_signature<R (*)(A)> {};

template <class H>
struct handler_traits : handler_signature<decltype(&H::operator())> {};
template <class R, class A>
struct handler_traits<R (*)(A)> : handler_signature<R (*)(A)> {};
template <class R, class A>
struct handler_traits<R (*)(A) noexcept> : handler_signature<R (*)(A)> {};

// A message whose body does not decode as its handler's type: bad input from a peer, dropped,
// unlike a TypeError the handler itself throws (which ends the actor).
struct bad_message : TypeError {
  using TypeError::TypeError;
};

template <class M>
M decode_message(const msgpack::object& body) {
  try {
    return convert<M>(body);
  } catch (const TypeError& e) {
    throw bad_message(e.what());
  }
}

// One handler, erased: decodes the body as its message type (TypeError on a mismatch), runs the
// handler, and packs its return value (nil for void) into reply when the sender asked for one.
struct handler_entry {
  std::uint64_t type_id;
  std::string type_name;
  std::function<void(const msgpack::object& body, Buffer* reply)> invoke;
};

template <class H>
handler_entry make_handler(H handler) {
  using traits = handler_traits<std::decay_t<H>>;
  using M = typename traits::message;
  using R = typename traits::result;
  static_assert(packable<M>, "multiproc::Behavior: a handler's parameter must be a MessagePack-packable type");
  static_assert(std::is_void_v<R> || packable<R>,
                "multiproc::Behavior: a handler returns void or a MessagePack-packable type");
  return {message_type_id<M>(), std::string(message_type_name<M>()),
          [h = std::move(handler)](const msgpack::object& body, Buffer* reply) mutable {
            M msg = decode_message<M>(body);
            if constexpr (std::is_void_v<R>) {
              h(msg);
              if (reply) msgpack::packer<Buffer>(*reply).pack_nil();
            } else {
              R result = h(msg);
              if (reply) pack_into(*reply, result);
            }
          }};
}

} // namespace multiproc::detail
