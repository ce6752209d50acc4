// The Pool's fast path for arrays of numbers: reads a MessagePack array of integers or floats
// straight from its bytes, without msgpack-c's object tree (which costs a zone allocation and
// a 24-byte object per element, and led the profile of Pool.map of trivial tasks, issue 17).
// It accepts exactly what convert<T> accepts, with the same values; anything else (another
// type, an out-of-range value, a truncated or trailing byte) makes it decline, and the caller
// takes the generic path, which names the error.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>

namespace multiproc::detail {

// The types with a fast path: msgpack-c decodes them from any integer (floats also from a
// float) with a range check. bool decodes only from a boolean: it keeps the generic path.
template <class T>
concept plain_number = (std::is_integral_v<T> && !std::is_same_v<T, bool>) || std::is_floating_point_v<T>;

template <plain_number T>
class number_array {
public:
  // nullopt unless bytes are one array whose every element is a T (as convert<T> sees it).
  static std::optional<number_array> parse(std::string_view bytes) {
    number_array a(bytes);
    auto n = a.header();
    if (!n) return std::nullopt;
    a.size_ = *n;
    a.first_ = a.p_;
    T ignored;
    for (std::size_t i = 0; i < *n; ++i)
      if (!a.read(ignored)) return std::nullopt;
    if (a.p_ != a.end_) return std::nullopt;
    a.p_ = a.first_;
    return a;
  }
  std::size_t size() const { return size_; }
  // Calls each(value) for every element, in order.
  template <class Each>
  void for_each(Each&& each) {
    T v;
    for (p_ = first_; p_ != end_ && read(v);) each(v);
  }

private:
  explicit number_array(std::string_view b) : p_(b.data()), end_(b.data() + b.size()) {}

  bool has(std::size_t n) const { return static_cast<std::size_t>(end_ - p_) >= n; }
  template <class U>
  U big_endian() {
    U v;
    std::memcpy(&v, p_, sizeof v);
    p_ += sizeof v;
    if constexpr (std::endian::native == std::endian::little && sizeof(U) > 1) v = byteswap(v);
    return v;
  }
  template <class U>
  static U byteswap(U v) {
    auto bits = std::bit_cast<std::make_unsigned_t<U>>(v);
    std::make_unsigned_t<U> out = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i, bits >>= 8) out = (out << 8) | (bits & 0xff);
    return std::bit_cast<U>(out);
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
  bool read(T& v) {
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
  const char* first_ = nullptr;
  std::size_t size_ = 0;
};

} // namespace multiproc::detail
