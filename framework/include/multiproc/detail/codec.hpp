// The codec: C++ values <-> MessagePack bytes, with untrusted input handled as typed errors.
//
// encode() packs anything msgpack-c can pack (plus std::variant/std::monostate, added here).
// decode<T>() accepts bytes from another process: garbage is mp::Error, a value of another type
// is mp::TypeError naming both types. Decoding is strict where msgpack-c is lenient on purpose
// (for schema evolution it fills a tuple, std::array or MSGPACK_DEFINE struct from a shorter
// array with defaults and drops extra elements): here each decodes only from an array of exactly
// its arity, and a MSGPACK_DEFINE_MAP struct only from a map of exactly its keys, at any depth,
// so a receiver built with another version of a type gets TypeError, never a silent default.
// A hostile frame can exhaust neither the stack (nesting is bounded) nor memory: every size is
// bounded by the payload's, and the decoded tree by max_decoded_size() (codec.cpp).
#pragma once

#include <array>
#include <cstddef>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <span>
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
// trailing bytes, absurd nesting, or a value whose decoded tree would take more than
// max_decoded_size(payload.size()) bytes.
msgpack::object_handle unpack_untrusted(std::string_view payload);
// The memory a payload of n bytes may take once decoded (its tree of msgpack::objects, 24
// bytes per element, and the bytes of its strings): the frame ceiling or 8n, whichever is
// larger. Enough for any value whose elements average 3 bytes or more; millions of one-byte
// elements (nil, bool, small ints) are what it refuses, which would otherwise cost 25x.
std::size_t max_decoded_size(std::size_t payload_size) noexcept;
// As unpack_untrusted, without that budget: for bytes this process packed itself (Object's
// conversions), which are as large as the value they came from.
msgpack::object_handle unpack_local(std::string_view payload);

[[noreturn]] void throw_type_mismatch(const msgpack::object&, const std::string& wanted,
                                      const std::string& reason = {});

// ---- strict shapes -------------------------------------------------------------------------
// shape<T>::check(o) walks o along T before msgpack-c converts it and throws shape_mismatch
// where an array's length or a map's keys differ from T's; shape<T>::checked is false for the
// types that have nothing to check (scalars, strings, containers of them), so decoding those
// costs nothing more.

struct shape_mismatch {
  std::string reason;
};
// o is not an array of exactly n elements, which `type` (a tuple, std::array, pair) needs.
[[noreturn]] void throw_arity_mismatch(const msgpack::object& o, std::size_t n, const std::string& type);

template <class T>
struct shape {
  static constexpr bool checked = false;
  static void check(const msgpack::object&) {}
};

template <class T>
void check_shape(const msgpack::object& o) {
  if constexpr (shape<T>::checked) shape<T>::check(o);
}

// An array of exactly N, element I checked as Ts...[I].
template <class... Ts>
struct fixed_array_shape {
  static constexpr bool checked = true;
  template <class T>
  static void check(const msgpack::object& o) {
    if (o.type != msgpack::type::ARRAY || o.via.array.size != sizeof...(Ts))
      throw_arity_mismatch(o, sizeof...(Ts), type_name<T>());
    check_elements(o.via.array.ptr, std::index_sequence_for<Ts...>{});
  }
  template <std::size_t... I>
  static void check_elements([[maybe_unused]] const msgpack::object* items, std::index_sequence<I...>) {
    (check_shape<Ts>(items[I]), ...);
  }
};
template <class... Ts>
struct shape<std::tuple<Ts...>> : fixed_array_shape<Ts...> {
  static void check(const msgpack::object& o) {
    fixed_array_shape<Ts...>::template check<std::tuple<Ts...>>(o);
  }
};
template <class A, class B>
struct shape<std::pair<A, B>> : fixed_array_shape<A, B> {
  static void check(const msgpack::object& o) { fixed_array_shape<A, B>::template check<std::pair<A, B>>(o); }
};
template <class T, std::size_t N>
struct shape<std::array<T, N>> {
  static constexpr bool checked = true;
  static void check(const msgpack::object& o) {
    // std::array<char, N> and <unsigned char, N> travel as bytes, every other as an array.
    auto size = o.type == msgpack::type::ARRAY ? o.via.array.size
                : o.type == msgpack::type::BIN ? o.via.bin.size
                : o.type == msgpack::type::STR ? o.via.str.size
                                               : N;
    if (size != N) throw_arity_mismatch(o, N, type_name<std::array<T, N>>());
    if (o.type == msgpack::type::ARRAY)
      for (const auto& item : std::span(o.via.array.ptr, size)) check_shape<T>(item);
  }
};

// Containers: each element (key, value) checked as its type, when that type has a shape.
template <class T>
struct sequence_shape {
  static constexpr bool checked = shape<T>::checked;
  static void check(const msgpack::object& o) {
    if (o.type != msgpack::type::ARRAY) return;
    for (const auto& item : std::span(o.via.array.ptr, o.via.array.size)) check_shape<T>(item);
  }
};
template <class K, class V>
struct map_shape {
  static constexpr bool checked = shape<K>::checked || shape<V>::checked;
  static void check(const msgpack::object& o) {
    if (o.type != msgpack::type::MAP) return;
    for (const auto& kv : std::span(o.via.map.ptr, o.via.map.size)) {
      check_shape<K>(kv.key);
      check_shape<V>(kv.val);
    }
  }
};
template <class T, class A> struct shape<std::vector<T, A>> : sequence_shape<T> {};
template <class T, class A> struct shape<std::list<T, A>> : sequence_shape<T> {};
template <class T, class A> struct shape<std::deque<T, A>> : sequence_shape<T> {};
template <class T, class C, class A> struct shape<std::set<T, C, A>> : sequence_shape<T> {};
template <class T, class C, class A> struct shape<std::multiset<T, C, A>> : sequence_shape<T> {};
template <class T, class H, class E, class A>
struct shape<std::unordered_set<T, H, E, A>> : sequence_shape<T> {};
template <class K, class V, class C, class A> struct shape<std::map<K, V, C, A>> : map_shape<K, V> {};
template <class K, class V, class C, class A> struct shape<std::multimap<K, V, C, A>> : map_shape<K, V> {};
template <class K, class V, class H, class E, class A>
struct shape<std::unordered_map<K, V, H, E, A>> : map_shape<K, V> {};

template <class T>
struct shape<std::optional<T>> {
  static constexpr bool checked = shape<T>::checked;
  static void check(const msgpack::object& o) {
    if (o.type != msgpack::type::NIL) check_shape<T>(o);
  }
};
// [index, value]: the value checked as the alternative the index names.
template <class... Ts>
struct shape<std::variant<Ts...>> {
  static constexpr bool checked = (shape<Ts>::checked || ...);
  static void check(const msgpack::object& o) {
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) return;
    const auto& index = o.via.array.ptr[0];
    if (index.type != msgpack::type::POSITIVE_INTEGER) return;
    check_alternative(index.via.u64, o.via.array.ptr[1], std::index_sequence_for<Ts...>{});
  }
  template <std::size_t... I>
  static void check_alternative(std::uint64_t index, const msgpack::object& value,
                                std::index_sequence<I...>) {
    ((I == index ? check_shape<Ts>(value) : void()), ...);
  }
};

// A MSGPACK_DEFINE / MSGPACK_DEFINE_MAP struct (the macros, unlike a hand-written msgpack_pack,
// also define the member template msgpack_object). Its fields are private to the macro, but its
// msgpack_pack(packer) shows them to any packer: fields_checker is a packer that, instead of
// writing, checks each field's slot of o against the field's type.
template <class T>
concept msgpack_defined = requires { &T::template msgpack_object<msgpack::object>; };

class fields_checker {
public:
  fields_checker(const msgpack::object& o, std::string (*type)()) : o_(o), type_(type) {}
  // What MSGPACK_DEFINE packs first: the array's length or the map's size.
  void pack_array(std::size_t n);
  void pack_map(std::size_t n);
  template <class U>
  void pack(const U& field) {
    if constexpr (std::is_convertible_v<const U&, std::string_view>) {
      if (expecting_key()) return take_key(field);
    }
    check_shape<U>(next_field());
  }

private:
  bool expecting_key() const noexcept { return o_.type == msgpack::type::MAP && !value_; }
  void take_key(std::string_view key);
  const msgpack::object& next_field();

  const msgpack::object& o_;
  std::string (*type_)();
  std::size_t next_ = 0;                    // array: the next field's index
  const msgpack::object* value_ = nullptr;  // map: the value of the key just taken
};

template <msgpack_defined T>
struct shape<T> {
  static constexpr bool checked = true;
  static void check(const msgpack::object& o) {
    const T probe{};
    fields_checker checker(o, &type_name<T>);
    probe.msgpack_pack(checker);
  }
};

// Decodes o as a T: TypeError (naming what o holds and T) when it is not one.
template <class T>
T convert(const msgpack::object& o) {
  try {
    check_shape<T>(o);
    return o.as<T>();
  } catch (const shape_mismatch& e) {
    throw_type_mismatch(o, type_name<T>(), e.reason);
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
template <class T>
T decode_local(std::string_view packed) {
  auto handle = unpack_local(packed);
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
