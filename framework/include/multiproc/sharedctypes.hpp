// Shared memory values — Python's multiprocessing.Value / Array / RawValue / RawArray.
//
// Value<T> is one T and Array<T> a fixed-size array of T in shared memory (detail/shm.hpp): a
// handle is a cheap copy, and a copy passed to a Process (under any start method) or inherited
// by any forked child reads and writes the same memory, and shares the same lock. T is the C++ type behind one of Python's
// typecodes:
//   b signed char   B unsigned char   h short   H unsigned short   i int   I unsigned
//   l long          L unsigned long   q long long   Q unsigned long long
//   f float         d double          u wchar_t
// Access is not atomic: as in Python, guard read-modify-write with get_lock(), an RLock made with
// the object (lock=true, the default); RawValue/RawArray (or lock=false) have none, and their
// get_lock() throws ValueError. Array is zero-filled unless given values.
// Destructor: drops this handle only; the memory lives while any process holds a copy.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "multiproc/detail/shm.hpp"
#include "multiproc/errors.hpp"
#include "multiproc/synchronize.hpp"

namespace multiproc {

namespace detail {

template <class T>
inline constexpr bool is_ctype_v =
    std::is_same_v<T, signed char> || std::is_same_v<T, unsigned char> || std::is_same_v<T, short> ||
    std::is_same_v<T, unsigned short> || std::is_same_v<T, int> || std::is_same_v<T, unsigned> ||
    std::is_same_v<T, long> || std::is_same_v<T, unsigned long> || std::is_same_v<T, long long> ||
    std::is_same_v<T, unsigned long long> || std::is_same_v<T, float> || std::is_same_v<T, double> ||
    std::is_same_v<T, wchar_t>;

template <class T>
void check_ctype() {
  static_assert(is_ctype_v<T>,
                "Value<T>/Array<T> take the C++ type of a Python typecode: signed char, unsigned char, "
                "short, unsigned short, int, unsigned, long, unsigned long, long long, unsigned long "
                "long, float, double or wchar_t");
}

inline std::optional<RLock> make_lock(bool lock) {
  if (lock) return RLock();
  return std::nullopt;
}

inline RLock& checked_lock(std::optional<RLock>& lock) {
  if (!lock) throw ValueError("this shared object was made with lock=false: it has no lock");
  return *lock;
}

// n zero-filled Ts in a fresh shared mapping.
template <class T>
std::shared_ptr<T> map_shared_array(std::size_t n) {
  auto mapping = map_shared(n * sizeof(T));
  auto* first = static_cast<T*>(mapping.get());
  return std::shared_ptr<T>(std::move(mapping), first);
}

}  // namespace detail

template <class T>
class Value {
public:
  explicit Value(T init = T{}, bool lock = true)
      : cell_(detail::map_shared_array<T>(1)), lock_(detail::make_lock(lock)) {
    detail::check_ctype<T>();
    *cell_ = init;
  }
  // The shared cell itself: v.value() = 3; v.value() += 1 (under get_lock() if others write).
  T& value() { return *cell_; }
  const T& value() const { return *cell_; }
  RLock& get_lock() { return detail::checked_lock(lock_); }

private:
  friend struct detail::reducer<Value>;
  Value(std::shared_ptr<T> cell, std::optional<RLock> lock) : cell_(std::move(cell)), lock_(std::move(lock)) {}
  std::shared_ptr<T> cell_;
  std::optional<RLock> lock_;
};

template <class T>
class Array {
public:
  explicit Array(std::size_t size, bool lock = true)
      : data_(detail::map_shared_array<T>(size)), size_(size), lock_(detail::make_lock(lock)) {
    detail::check_ctype<T>();
  }
  Array(std::initializer_list<T> values, bool lock = true) : Array(values.size(), lock) {
    std::copy(values.begin(), values.end(), begin());
  }
  explicit Array(const std::vector<T>& values, bool lock = true) : Array(values.size(), lock) {
    std::copy(values.begin(), values.end(), begin());
  }

  T& operator[](std::size_t i) { return data_.get()[i]; }
  const T& operator[](std::size_t i) const { return data_.get()[i]; }
  std::size_t size() const { return size_; }
  T* begin() { return data_.get(); }
  T* end() { return data_.get() + size_; }
  const T* begin() const { return data_.get(); }
  const T* end() const { return data_.get() + size_; }
  // A copy of every element: Python's arr[:].
  std::vector<T> to_vector() const { return std::vector<T>(begin(), end()); }
  RLock& get_lock() { return detail::checked_lock(lock_); }

private:
  friend struct detail::reducer<Array>;
  Array(std::shared_ptr<T> data, std::size_t size, std::optional<RLock> lock)
      : data_(std::move(data)), size_(size), lock_(std::move(lock)) {}
  std::shared_ptr<T> data_;
  std::size_t size_;
  std::optional<RLock> lock_;
};

namespace detail {
// [memory, lock or nil]
template <class T>
struct reducer<Value<T>> {
  static void reduce(const Value<T>& v, msgpack::packer<Buffer>& pk, Reduction& r) {
    pk.pack_array(2);
    reduce_mapping(v.cell_, pk, r);
    reducer<std::optional<RLock>>::reduce(v.lock_, pk, r);
  }
  static Value<T> rebuild(const msgpack::object& o, ReceivedFds& fds) {
    auto fields = reduced_fields(o, 2, "Value");
    auto cell = rebuild_shared_object<T>(fields[0], fds);
    return Value<T>(std::move(cell), reducer<std::optional<RLock>>::rebuild(fields[1], fds));
  }
};

// [memory, size, lock or nil]
template <class T>
struct reducer<Array<T>> {
  static void reduce(const Array<T>& a, msgpack::packer<Buffer>& pk, Reduction& r) {
    pk.pack_array(3);
    reduce_mapping(a.data_, pk, r);
    pk.pack(a.size_);
    reducer<std::optional<RLock>>::reduce(a.lock_, pk, r);
  }
  static Array<T> rebuild(const msgpack::object& o, ReceivedFds& fds) {
    auto fields = reduced_fields(o, 3, "Array");
    auto size = convert<std::size_t>(fields[1]);
    if (size > SIZE_MAX / sizeof(T)) throw Error("an Array's handle names an impossible size (a malformed message)");
    auto data = rebuild_shared_object<T>(fields[0], fds, size * sizeof(T));
    return Array<T>(std::move(data), size, reducer<std::optional<RLock>>::rebuild(fields[2], fds));
  }
};
}  // namespace detail

// Python's RawValue / RawArray: shared memory without a lock.
template <class T>
Value<T> RawValue(T init) {
  return Value<T>(init, false);
}
template <class T>
Array<T> RawArray(std::size_t size) {
  return Array<T>(size, false);
}

}  // namespace multiproc
