// The Pool's fast path for arrays of numbers (issue 17: Pool.map of trivial tasks), both ways.
// number_array reads a MessagePack array of integers or floats straight from its bytes, without
// msgpack-c's object tree (a zone allocation and a 24-byte object per element, which led the
// profile). It accepts exactly what convert<T> accepts, with the same values; anything else
// (another type, an out-of-range value, a truncated or trailing byte) makes it decline, and the
// caller takes the generic path, which names the error. put_number writes one number into a
// buffer sized up front, without msgpack-c's packer's one append call per value.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace multiproc::detail {

// The types with a fast path: msgpack-c decodes them from any integer (floats also from a
// float) with a range check. bool decodes only from a boolean: it keeps the generic path.
template <class T>
concept plain_number =
    (std::is_integral_v<T> && !std::is_same_v<T, bool>) || std::is_same_v<T, float> || std::is_same_v<T, double>;

// The most bytes put_number writes.
constexpr std::size_t max_packed_number = 9;

template <class U>
char* put_big_endian(char* p, U v) {
  for (std::size_t i = sizeof v; i-- > 0; v = static_cast<U>(v >> 8)) p[i] = static_cast<char>(v & 0xff);
  return p + sizeof v;
}
template <class U>
char* put_tagged(char* p, unsigned char tag, U v) {
  *p = static_cast<char>(tag);
  return put_big_endian(p + 1, v);
}

// Writes v at p as MessagePack (integers in their shortest form, as msgpack-c packs them);
// returns the end.
template <plain_number T>
char* put_number(char* p, T v) {
  if constexpr (std::is_same_v<T, float>) {
    return put_tagged(p, 0xca, std::bit_cast<std::uint32_t>(v));
  } else if constexpr (std::is_same_v<T, double>) {
    return put_tagged(p, 0xcb, std::bit_cast<std::uint64_t>(v));
  } else {
    if constexpr (std::is_signed_v<T>) {
      if (v < 0) {
        auto x = static_cast<std::int64_t>(v);
        if (x >= -32) return *p = static_cast<char>(x), p + 1;
        if (x >= INT8_MIN) return put_tagged(p, 0xd0, static_cast<std::uint8_t>(x));
        if (x >= INT16_MIN) return put_tagged(p, 0xd1, static_cast<std::uint16_t>(x));
        if (x >= INT32_MIN) return put_tagged(p, 0xd2, static_cast<std::uint32_t>(x));
        return put_tagged(p, 0xd3, static_cast<std::uint64_t>(x));
      }
    }
    auto x = static_cast<std::uint64_t>(v);
    if (x <= 0x7f) return *p = static_cast<char>(x), p + 1;
    if (x <= UINT8_MAX) return put_tagged(p, 0xcc, static_cast<std::uint8_t>(x));
    if (x <= UINT16_MAX) return put_tagged(p, 0xcd, static_cast<std::uint16_t>(x));
    if (x <= UINT32_MAX) return put_tagged(p, 0xce, static_cast<std::uint32_t>(x));
    return put_tagged(p, 0xcf, x);
  }
}

// Appends up to `count` numbers to buf: room for all of them is reserved at once (no reallocation,
// no append call per value), but bytes are made writable a block at a time, so that the pages
// the numbers do not reach are never touched (on a VM a first touch costs a page fault of ~10 µs),
// and what they did not use is given back when the writer goes.
class number_writer {
public:
  number_writer(std::string& buf, std::size_t count) : buf_(buf) {
    buf.reserve(buf.size() + count * max_packed_number);
    p_ = end_ = buf.data() + buf.size();
  }
  ~number_writer() { buf_.resize(static_cast<std::size_t>(p_ - buf_.data())); }
  number_writer(const number_writer&) = delete;
  number_writer& operator=(const number_writer&) = delete;
  template <plain_number T>
  void put(T v) {
    if (static_cast<std::size_t>(end_ - p_) < max_packed_number) grow();
    p_ = put_number(p_, v);
  }

private:
  static constexpr std::size_t block = 4096;
  void grow() {
    auto used = static_cast<std::size_t>(p_ - buf_.data());
    buf_.resize(std::min(buf_.capacity(), used + block));
    p_ = buf_.data() + used;
    end_ = buf_.data() + buf_.size();
  }

  std::string& buf_;
  char* p_;
  char* end_;
};

template <plain_number T>
class number_array {
public:
  // Calls each(value) for the elements of the array in bytes, in order, and returns their
  // number; nullopt as soon as an element is not a T (as convert<T> sees it), the array holds
  // more than max_size elements, or bytes hold more than the array (each may have been called
  // for the elements before).
  template <class Each>
  static std::optional<std::size_t> visit(std::string_view bytes, std::size_t max_size, Each&& each) {
    number_array a(bytes);
    auto n = a.header();
    if (!n || *n > max_size) return std::nullopt;
    T v;
    for (std::size_t i = 0; i < *n; ++i) {
      if (!a.read(v)) return std::nullopt;
      each(v);
    }
    if (a.p_ != a.end_) return std::nullopt;
    return n;
  }

private:
  explicit number_array(std::string_view b) : p_(b.data()), end_(b.data() + b.size()) {}

  bool has(std::size_t n) const { return static_cast<std::size_t>(end_ - p_) >= n; }
  template <class U>
  U big_endian() {
    std::make_unsigned_t<U> v;
    std::memcpy(&v, p_, sizeof v);
    p_ += sizeof v;
    if constexpr (std::endian::native == std::endian::little) {
      if constexpr (sizeof v == 2) v = __builtin_bswap16(v);
      if constexpr (sizeof v == 4) v = __builtin_bswap32(v);
      if constexpr (sizeof v == 8) v = __builtin_bswap64(v);
    }
    return static_cast<U>(v);
  }

  std::optional<std::size_t> header() {
    if (!has(1)) return std::nullopt;
    auto tag = static_cast<unsigned char>(*p_++);
    if ((tag & 0xf0) == 0x90) return tag & 0x0f;
    if (tag == 0xdc && has(2)) return big_endian<std::uint16_t>();
    if (tag == 0xdd && has(4)) return big_endian<std::uint32_t>();
    return std::nullopt;
  }

  // One element into v; false where convert<T> would refuse it or the bytes end.
  [[gnu::always_inline]] bool read(T& v) {
    if (!has(1)) return false;
    auto tag = static_cast<unsigned char>(*p_);
    if (tag <= 0x7f) return ++p_, from_unsigned(tag, v);
    if (tag >= 0xe0) return ++p_, from_signed(static_cast<std::int8_t>(tag), v);
    static constexpr std::size_t payload[] = {4, 8, 1, 2, 4, 8, 1, 2, 4, 8};  // 0xca..0xd3
    if (tag < 0xca || tag > 0xd3 || !has(1 + payload[tag - 0xca])) return false;
    ++p_;
    switch (tag) {
      case 0xca: return from_float(std::bit_cast<float>(big_endian<std::uint32_t>()), v);
      case 0xcb: return from_float(std::bit_cast<double>(big_endian<std::uint64_t>()), v);
      case 0xcc: return from_unsigned(big_endian<std::uint8_t>(), v);
      case 0xcd: return from_unsigned(big_endian<std::uint16_t>(), v);
      case 0xce: return from_unsigned(big_endian<std::uint32_t>(), v);
      case 0xcf: return from_unsigned(big_endian<std::uint64_t>(), v);
      case 0xd0: return from_signed(big_endian<std::int8_t>(), v);
      case 0xd1: return from_signed(big_endian<std::int16_t>(), v);
      case 0xd2: return from_signed(big_endian<std::int32_t>(), v);
      default: return from_signed(big_endian<std::int64_t>(), v);
    }
  }

  // msgpack-c keeps a non-negative signed value as a positive integer, as its parser does.
  static bool from_signed(std::int64_t x, T& v) {
    if (x >= 0) return from_unsigned(static_cast<std::uint64_t>(x), v);
    if constexpr (std::is_floating_point_v<T>) {
      v = static_cast<T>(x);
      return true;
    } else if constexpr (std::is_unsigned_v<T>) {
      return false;
    } else {
      if (x < static_cast<std::int64_t>(std::numeric_limits<T>::min())) return false;
      v = static_cast<T>(x);
      return true;
    }
  }
  static bool from_unsigned(std::uint64_t x, T& v) {
    if constexpr (std::is_integral_v<T>) {
      if (x > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return false;
    }
    v = static_cast<T>(x);
    return true;
  }
  static bool from_float(double x, T& v) {
    if constexpr (std::is_floating_point_v<T>) {
      v = static_cast<T>(x);
      return true;
    } else {
      return false;
    }
  }

  const char* p_;
  const char* end_;
};

} // namespace multiproc::detail
