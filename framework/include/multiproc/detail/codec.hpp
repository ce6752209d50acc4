// The codec: C++ values <-> MessagePack bytes, with untrusted input handled as typed errors.
//
// encode() packs anything msgpack-c can pack (plus std::variant/std::monostate, added here).
// decode<T>() accepts bytes from another process: garbage is mp::Error, a value of another type
// is mp::TypeError naming both types; sizes and nesting are bounded by the payload itself, so a
// hostile frame can neither exhaust memory nor the stack.
#pragma once

#include <array>
#include <cstddef>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "multiproc/detail/msgpack.hpp"
#include "multiproc/errors.hpp"

namespace multiproc::detail {

// A growable byte buffer msgpack's packer writes into; frames reserve their header up front.
struct Buffer {
  std::string data;
  void write(const char* p, std::size_t n) { data.append(p, n); }
};

std::string demangle(const char* mangled);
template <class T>
std::string type_name() {
  return demangle(typeid(T).name());
}
// Python-ish name of what a MessagePack value holds: "int", "str", "list", ...
std::string msgpack_type_name(const msgpack::object&);

// Parses one whole MessagePack value from untrusted bytes. Error on garbage, truncation,
// trailing bytes or absurd nesting.
msgpack::object_handle unpack_untrusted(std::string_view payload);
[[noreturn]] void throw_type_mismatch(const msgpack::object&, const std::string& wanted);

template <class T>
T convert(const msgpack::object& o) {
  try {
    return o.as<T>();
  } catch (const msgpack::type_error&) {
    throw_type_mismatch(o, type_name<T>());
  } catch (const std::bad_cast&) {
    throw_type_mismatch(o, type_name<T>());
  }
}

template <class T>
void pack_into(Buffer& buf, const T& value) {
  msgpack::packer<Buffer> packer(buf);
  packer.pack(value);
}

template <class T>
std::string encode(const T& value) {
  Buffer buf;
  pack_into(buf, value);
  return std::move(buf.data);
}

template <class T>
T decode(std::string_view payload) {
  auto handle = unpack_untrusted(payload);
  return convert<T>(handle.get());
}

// Whether T travels: what msgpack-c's adaptors (and ours below) cover. Used to keep implicit
// conversions (mp::Object's) from swallowing types that would only fail deep inside msgpack.
template <class T, class = void>
struct has_msgpack_member : std::false_type {};
template <class T>
struct has_msgpack_member<T, std::void_t<decltype(&T::template msgpack_pack<msgpack::packer<Buffer>>)>>
    : std::true_type {};

template <class T>
struct is_packable
    : std::bool_constant<std::is_arithmetic_v<T> || std::is_enum_v<T> || has_msgpack_member<T>::value> {};
template <> struct is_packable<std::string> : std::true_type {};
template <> struct is_packable<std::string_view> : std::true_type {};
template <> struct is_packable<std::monostate> : std::true_type {};
template <class T, class A> struct is_packable<std::vector<T, A>> : is_packable<T> {};
template <class T, class A> struct is_packable<std::list<T, A>> : is_packable<T> {};
template <class T, class A> struct is_packable<std::deque<T, A>> : is_packable<T> {};
template <class T, std::size_t N> struct is_packable<std::array<T, N>> : is_packable<T> {};
template <class T> struct is_packable<std::optional<T>> : is_packable<T> {};
template <class T, class C, class A> struct is_packable<std::set<T, C, A>> : is_packable<T> {};
template <class T, class H, class E, class A>
struct is_packable<std::unordered_set<T, H, E, A>> : is_packable<T> {};
template <class K, class V, class C, class A>
struct is_packable<std::map<K, V, C, A>> : std::bool_constant<is_packable<K>::value && is_packable<V>::value> {};
template <class K, class V, class H, class E, class A>
struct is_packable<std::unordered_map<K, V, H, E, A>>
    : std::bool_constant<is_packable<K>::value && is_packable<V>::value> {};
template <class A, class B>
struct is_packable<std::pair<A, B>> : std::bool_constant<is_packable<A>::value && is_packable<B>::value> {};
template <class... Ts>
struct is_packable<std::tuple<Ts...>> : std::bool_constant<(is_packable<Ts>::value && ...)> {};
template <class... Ts>
struct is_packable<std::variant<Ts...>> : std::bool_constant<(is_packable<Ts>::value && ...)> {};

template <class T>
concept packable = is_packable<std::remove_cvref_t<T>>::value;

} // namespace multiproc::detail

// std::variant and std::monostate, which msgpack-c 4.1 lacks without Boost.
// A variant travels as [index, value]; monostate as nil.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<std::monostate> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& p, const std::monostate&) const {
      p.pack_nil();
      return p;
    }
  };
  template <>
  struct convert<std::monostate> {
    const msgpack::object& operator()(const msgpack::object& o, std::monostate&) const {
      if (o.type != msgpack::type::NIL) throw msgpack::type_error();
      return o;
    }
  };
  template <class... Ts>
  struct pack<std::variant<Ts...>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& p, const std::variant<Ts...>& v) const {
      p.pack_array(2);
      p.pack(static_cast<uint32_t>(v.index()));
      std::visit([&p](const auto& alt) { p.pack(alt); }, v);
      return p;
    }
  };
  template <class... Ts>
  struct convert<std::variant<Ts...>> {
    const msgpack::object& operator()(const msgpack::object& o, std::variant<Ts...>& v) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) throw msgpack::type_error();
      auto index = o.via.array.ptr[0].as<uint32_t>();
      if (index >= sizeof...(Ts)) throw msgpack::type_error();
      assign(o.via.array.ptr[1], v, index, std::index_sequence_for<Ts...>{});
      return o;
    }

  private:
    template <std::size_t... I>
    static void assign(const msgpack::object& o, std::variant<Ts...>& v, uint32_t index,
                       std::index_sequence<I...>) {
      ((I == index ? (void)v.template emplace<I>(o.as<std::variant_alternative_t<I, std::variant<Ts...>>>())
                   : (void)0),
       ...);
    }
  };
  } // namespace adaptor
}
} // namespace msgpack
