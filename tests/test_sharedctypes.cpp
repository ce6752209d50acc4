// Tests for <multiproc/sharedctypes.hpp>: Value, Array, RawValue and RawArray shared with real
// child processes, their locks, and every typecode's C++ type.
#include <cwchar>
#include <numeric>
#include <vector>

#include "ipc_test_support.hpp"
#include "multiproc/multiproc.hpp"
#include <catch2/catch.hpp>

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::Team;

namespace {

// Seed 000's f(n, a): n.value += 1 and negate every element, each under its own lock.
void bump_and_negate(mp::Value<double> num, mp::Array<int> arr) {
  {
    std::lock_guard guard(num.get_lock());
    num.value() += 1;
  }
  std::lock_guard guard(arr.get_lock());
  for (auto& x : arr) x = -x;
}

void add_under_lock(mp::Value<int> total, int times) {
  for (int i = 0; i < times; ++i) {
    std::lock_guard guard(total.get_lock());
    total.value() += 1;
  }
}

template <class T>
void store_in_child(mp::Value<T> cell, mp::Array<T> cells, T value) {
  cell.value() = value;
  for (auto& c : cells) c = value;
}

std::vector<int> iota_vector(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

}  // namespace

TEST_CASE("sharedctypes: processes bump a Value and negate an Array under their locks (seed 000)",
          "[sharedctypes][ipc]") {
  int processes = GENERATE(1, 2, 4, 8, 10);
  mp::Value<double> num(0.0);
  mp::Array<int> arr(iota_vector(10));
  Team team;
  for (int i = 0; i < processes; ++i) team.start(bump_and_negate, num, arr);
  for (int code : team.join_all()) CHECK(code == 0);
  CHECK(num.value() == Approx(processes));
  auto expected = iota_vector(10);
  if (processes % 2 == 1)
    for (auto& x : expected) x = -x;
  CHECK(arr.to_vector() == expected);
}

TEST_CASE("sharedctypes: two processes adding to a Value under its lock reach the exact total",
          "[sharedctypes][ipc]") {
  mp::Value<int> total(0);
  Team team;
  team.start(add_under_lock, total, 20000);
  team.start(add_under_lock, total, 20000);
  CHECK(team.join_all() == std::vector<int>{0, 0});
  CHECK(total.value() == 40000);
}

TEMPLATE_TEST_CASE("sharedctypes: every typecode's type is shared with a child", "[sharedctypes][ipc]",
                   signed char, unsigned char, short, unsigned short, int, unsigned, long, unsigned long,
                   long long, unsigned long long, float, double, wchar_t) {
  mp::Value<TestType> cell;
  auto cells = mp::RawArray<TestType>(3);
  CHECK(cell.value() == TestType{});
  CHECK(cells.to_vector() == std::vector<TestType>(3, TestType{}));
  mp::Process child(store_in_child<TestType>, cell, cells, static_cast<TestType>(42));
  child.start();
  multiproc_test::join_or_kill(child);
  CHECK(child.exitcode() == 0);
  CHECK(cell.value() == static_cast<TestType>(42));
  CHECK(cells.to_vector() == std::vector<TestType>(3, static_cast<TestType>(42)));
}

TEST_CASE("sharedctypes: Array is zero-filled or built from a list or vector, and indexes and iterates",
          "[sharedctypes]") {
  mp::Array<long> zeros(4);
  CHECK(zeros.size() == 4);
  CHECK(zeros.to_vector() == std::vector<long>(4, 0));
  mp::Array<double> listed{1.5, 2.5, 3.5};
  CHECK(listed.size() == 3);
  CHECK(listed[1] == 2.5);
  listed[1] = -1;
  CHECK(std::accumulate(listed.begin(), listed.end(), 0.0) == 4.0);
  const mp::Array<double>& read_only = listed;
  CHECK(read_only[1] == -1);
  mp::Array<wchar_t> text(std::vector<wchar_t>{L'h', L'i'});
  CHECK(std::wstring(text.begin(), text.end()) == L"hi");
  mp::Array<int> empty(0);
  CHECK(empty.begin() == empty.end());
}

TEST_CASE("sharedctypes: copies of a handle share the same memory", "[sharedctypes]") {
  mp::Value<int> a(1);
  auto b = a;
  b.value() = 7;
  CHECK(a.value() == 7);
  mp::Array<int> xs{1, 2};
  auto ys = xs;
  ys[0] = 9;
  CHECK(xs[0] == 9);
  CHECK(&a.get_lock() != &b.get_lock());  // distinct handles ...
  a.get_lock().acquire();
  CHECK(b.get_lock().is_owned());  // ... to one lock
  a.get_lock().release();
}

TEST_CASE("sharedctypes: without a lock get_lock throws ValueError", "[sharedctypes]") {
  auto raw = mp::RawValue<int>(5);
  CHECK(raw.value() == 5);
  CHECK_THROWS_AS(raw.get_lock(), mp::ValueError);
  auto raw_array = mp::RawArray<double>(2);
  CHECK_THROWS_AS(raw_array.get_lock(), mp::ValueError);
  mp::Value<short> unlocked(3, false);
  CHECK_THROWS_AS(unlocked.get_lock(), mp::ValueError);
  mp::Array<int> unlocked_array({1, 2}, false);
  CHECK_THROWS_AS(unlocked_array.get_lock(), mp::ValueError);
}

TEST_CASE("sharedctypes: values live in anonymous shared memory, never in /dev/shm", "[sharedctypes][shm]") {
  mp::Value<int> v;
  mp::Array<double> a(1000);
  CHECK(multiproc_test::dev_shm_mappings().empty());
}
