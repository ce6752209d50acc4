// mp::Object — MessagePack's data model as a value type (Python's "any object that pickles").
//
// nil, bool, int64, uint64, double, string, binary, array, map. Object() is nil. Implicit from
// bool, integers, floating point, const char*, std::string and any type msgpack-c can pack;
// .as<T>() converts back (TypeError on mismatch, naming both types). Objects compare with a total
// order (numbers by value across int/uint/double; then by kind), so they can key a std::map, and
// print as Python's repr would: [1, 'x', None], {1: 'a'}. Maps keep insertion order, as dicts do.
// A plain value: safe to share read-only between threads; copies are deep.
#pragma once

#include <compare>
#include <concepts>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "multiproc/detail/codec.hpp"

namespace multiproc {

class Object {
public:
  enum class Kind : std::uint8_t { nil, boolean, int64, uint64, float64, string, binary, array, map };
  using Array = std::vector<Object>;
  using Map = std::vector<std::pair<Object, Object>>;  // insertion order, keys unique
  struct Binary {
    std::string bytes;
    friend bool operator==(const Binary&, const Binary&) = default;
  };

  Object() = default;
  Object(std::nullopt_t) {}
  Object(bool b) : v_(b) {}
  template <std::integral I>
    requires(!std::same_as<I, bool>)
  Object(I i) {
    if constexpr (std::is_signed_v<I>) {
      v_ = static_cast<std::int64_t>(i);
    } else if (static_cast<std::uint64_t>(i) <= static_cast<std::uint64_t>(INT64_MAX)) {
      v_ = static_cast<std::int64_t>(i);
    } else {
      v_ = static_cast<std::uint64_t>(i);
    }
  }
  template <std::floating_point F>
  Object(F f) : v_(static_cast<double>(f)) {}
  Object(const char* s) : v_(std::string(s)) {}
  Object(std::string s) : v_(std::move(s)) {}
  Object(std::string_view s) : v_(std::string(s)) {}
  Object(Binary b) : v_(std::move(b)) {}
  Object(Array a) : v_(std::move(a)) {}
  Object(Map m) : v_(std::move(m)) {}
  // Any other type msgpack-c can pack: packed, then read back as a dynamic value.
  template <class T>
    requires(!std::is_arithmetic_v<T> && !std::convertible_to<const T&, std::string_view> &&
             !std::same_as<T, Object> && detail::packable<T>)
  Object(const T& value) : Object(detail::decode_local<Object>(detail::encode(value))) {}

  Kind kind() const noexcept { return static_cast<Kind>(v_.index()); }
  bool is_nil() const noexcept { return kind() == Kind::nil; }

  // Converts to T: TypeError when the value is not a T (e.g. as<int>() of a string).
  template <class T>
  T as() const {
    if constexpr (std::same_as<T, Object>) {
      return *this;
    } else {
      return detail::decode_local<T>(detail::encode(*this));
    }
  }

  // Direct access for code that switches on kind(); std::bad_variant_access on the wrong kind.
  bool as_bool() const { return std::get<bool>(v_); }
  std::int64_t as_int64() const { return std::get<std::int64_t>(v_); }
  std::uint64_t as_uint64() const { return std::get<std::uint64_t>(v_); }
  double as_double() const { return std::get<double>(v_); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const Binary& as_binary() const { return std::get<Binary>(v_); }
  const Array& as_array() const { return std::get<Array>(v_); }
  const Map& as_map() const { return std::get<Map>(v_); }

  friend bool operator==(const Object& a, const Object& b) { return compare(a, b) == 0; }
  friend std::strong_ordering operator<=>(const Object& a, const Object& b) {
    return compare(a, b) <=> 0;
  }
  // Python's repr.
  friend std::ostream& operator<<(std::ostream&, const Object&);
  std::string repr() const;

  // Builds an Object from one MessagePack-encoded value (Error/TypeError on bad input).
  static Object from_msgpack(std::string_view encoded);

private:
  static int compare(const Object&, const Object&);
  std::variant<std::monostate, bool, std::int64_t, std::uint64_t, double, std::string, Binary,
               Array, Map>
      v_;
  friend struct ObjectAccess;
};

// For adaptors: the variant, read-only.
struct ObjectAccess {
  static const auto& variant(const Object& o) { return o.v_; }
};

} // namespace multiproc

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<multiproc::Object> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& p, const multiproc::Object& o) const {
      using K = multiproc::Object::Kind;
      switch (o.kind()) {
        case K::nil: p.pack_nil(); break;
        case K::boolean: p.pack(o.as_bool()); break;
        case K::int64: p.pack(o.as_int64()); break;
        case K::uint64: p.pack(o.as_uint64()); break;
        case K::float64: p.pack(o.as_double()); break;
        case K::string: p.pack(o.as_string()); break;
        case K::binary:
          p.pack_bin(static_cast<uint32_t>(o.as_binary().bytes.size()));
          p.pack_bin_body(o.as_binary().bytes.data(), static_cast<uint32_t>(o.as_binary().bytes.size()));
          break;
        case K::array:
          p.pack_array(static_cast<uint32_t>(o.as_array().size()));
          for (const auto& e : o.as_array()) (*this)(p, e);
          break;
        case K::map:
          p.pack_map(static_cast<uint32_t>(o.as_map().size()));
          for (const auto& [k, v] : o.as_map()) {
            (*this)(p, k);
            (*this)(p, v);
          }
          break;
      }
      return p;
    }
  };
  template <>
  struct convert<multiproc::Object> {
    const msgpack::object& operator()(const msgpack::object& in, multiproc::Object& out) const;
  };
  } // namespace adaptor
}
} // namespace msgpack
