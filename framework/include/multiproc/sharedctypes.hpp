// Shared memory values — Python's multiprocessing.Value / Array / RawValue / RawArray.
//
// Value<T> is one T and Array<T> a fixed-size array of T in anonymous shared memory
// (detail/shm.hpp): a handle is a cheap copy, and a copy passed to a Process (or inherited by any
// forked child) reads and writes the same memory. T is the C++ type behind one of Python's
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
  std::shared_ptr<T> data_;
  std::size_t size_;
  std::optional<RLock> lock_;
};

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
