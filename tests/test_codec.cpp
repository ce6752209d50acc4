// Tests for the codec (multiproc/detail/codec.hpp) as users meet it through recv<T>(): decoding
// is strict where msgpack-c is lenient (a tuple, std::array or MSGPACK_DEFINE struct only from an
// array of exactly its arity, a MSGPACK_DEFINE_MAP struct only from exactly its keys, at any
// depth), and what a message may cost once decoded is bounded, not only its length.
// The calls that must not compile are in tests/compile_fail/.
#include <unistd.h>

#include <array>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "multiproc/multiproc.hpp"
#include <catch2/catch.hpp>

namespace mp = multiproc;

namespace {

// Two versions of one message type: V2 has one field more.
struct PointV1 {
  int x = 0;
  MSGPACK_DEFINE(x);
};
struct PointV2 {
  int x = 0;
  int y = 0;
  MSGPACK_DEFINE(x, y);
};
struct NamedV1 {
  int x = 0;
  MSGPACK_DEFINE_MAP(x);
};
struct NamedV2 {
  int x = 0;
  std::string label;
  MSGPACK_DEFINE_MAP(x, label);
};
struct Outer {
  std::string name;
  PointV2 point;
  MSGPACK_DEFINE(name, point);
};

// What crosses a Pipe when `sent` is sent and a T is received; the TypeError's message if the
// receive throws one. Afterwards the pipe carries the next message intact: the bad one was
// consumed whole.
template <class T, class Sent>
std::string recv_error(const Sent& sent) {
  auto [a, b] = mp::Pipe();
  a.send(sent);
  a.send(std::string("next"));
  std::string message;
  try {
    b.recv<T>();
  } catch (const mp::TypeError& e) {
    message = e.what();
  }
  CHECK(b.recv<std::string>() == "next");
  return message;
}

// Restores the process-wide message ceiling at scope exit.
struct MessageCeiling {
  std::size_t saved = mp::max_message_size();
  explicit MessageCeiling(std::size_t bytes) { mp::set_max_message_size(bytes); }
  ~MessageCeiling() { mp::set_max_message_size(saved); }
};

// A MessagePack array32 of n nils: n + 5 bytes that msgpack-c decodes into n 24-byte objects.
std::string array_of_nils(std::uint32_t n) {
  return std::string("\xdd", 1) + std::string{char(n >> 24), char(n >> 16), char(n >> 8), char(n)} +
         std::string(n, '\xc0');
}

long peak_rss_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

// Writes one frame holding `payload` on fd from another thread (a pipe holds less than a big
// frame), so that the caller can receive it.
class frame_writer {
public:
  frame_writer(int fd, std::string payload)
      : thread_([fd, p = std::move(payload)] { mp::detail::write_frame(fd, p); }) {}
  ~frame_writer() { thread_.join(); }

private:
  std::thread thread_;
};

} // namespace

// ---- strict shapes: the rows of issue 18 -------------------------------------------------------

TEST_CASE(
    "codec: a struct received as its version with one more MSGPACK_DEFINE field is a TypeError "
    "naming both, not a default",
    "[codec]") {
  auto message = recv_error<PointV2>(PointV1{7});
  CHECK_THAT(message, Catch::Contains("list of 1") && Catch::Contains("PointV2") &&
                          Catch::Contains("has 2 fields") && Catch::Contains("different versions"));
}

TEST_CASE("codec: a struct received as its version with one field less is a TypeError, not a truncation",
          "[codec]") {
  CHECK_THAT(recv_error<PointV1>(PointV2{7, 8}), Catch::Contains("list of 2") && Catch::Contains("PointV1"));
}

TEST_CASE("codec: a tuple received from a shorter list is a TypeError", "[codec]") {
  CHECK_THAT((recv_error<std::tuple<int, int>>(std::vector<int>{1})),
             Catch::Contains("list of 1") && Catch::Contains("exactly 2"));
}

TEST_CASE("codec: a tuple, pair or std::array received from a longer list is a TypeError, not dropped items",
          "[codec]") {
  std::vector<int> three{1, 2, 3};
  CHECK_THAT((recv_error<std::tuple<int, int>>(three)), Catch::Contains("exactly 2"));
  CHECK_THAT((recv_error<std::pair<int, int>>(three)), Catch::Contains("list of 3"));
  CHECK_THAT((recv_error<std::array<int, 2>>(three)), Catch::Contains("exactly 2"));
  CHECK_THAT((recv_error<std::array<int, 4>>(three)), Catch::Contains("exactly 4"));
}

TEST_CASE("codec: a std::array of bytes received from fewer bytes is a TypeError, not zero-filled",
          "[codec]") {
  CHECK_THAT((recv_error<std::array<char, 4>>(std::array<char, 3>{'a', 'b', 'c'})),
             Catch::Contains("exactly 4"));
}

TEST_CASE("codec: a MSGPACK_DEFINE_MAP struct decodes only from exactly its keys", "[codec]") {
  CHECK_THAT(recv_error<NamedV2>(NamedV1{3}), Catch::Contains("NamedV2") && Catch::Contains("dict of 1"));
  CHECK_THAT(recv_error<NamedV1>(NamedV2{3, "x"}),
             Catch::Contains("NamedV1") && Catch::Contains("dict of 2"));
  CHECK_THAT(recv_error<NamedV2>(std::map<std::string, int>{{"x", 1}, {"other", 2}}),
             Catch::Contains("field 'label' is missing"));
}

TEST_CASE("codec: strictness holds at any depth: in vectors, maps, optionals, variants and structs",
          "[codec]") {
  CHECK_THAT(recv_error<std::vector<PointV2>>(std::vector<PointV1>{{1}, {2}}),
             Catch::Contains("std::vector<") && Catch::Contains("PointV2 has 2 fields"));
  CHECK_THAT((recv_error<std::map<std::string, std::tuple<int, int>>>(
                 std::map<std::string, std::vector<int>>{{"k", {1}}})),
             Catch::Contains("exactly 2"));
  CHECK_THAT(recv_error<std::optional<PointV2>>(std::optional<PointV1>(PointV1{1})),
             Catch::Contains("PointV2"));
  CHECK_THAT((recv_error<std::variant<int, PointV2>>(std::variant<int, PointV1>(PointV1{1}))),
             Catch::Contains("PointV2"));
  CHECK_THAT(recv_error<Outer>(std::make_tuple(std::string("n"), PointV1{1})),
             Catch::Contains("Outer") && Catch::Contains("PointV2 has 2 fields"));
}

TEST_CASE("codec: values of exactly the expected shape still decode, at any depth", "[codec]") {
  auto [a, b] = mp::Pipe();
  a.send(Outer{"n", {1, 2}});
  auto outer = b.recv<Outer>();
  CHECK((outer.name == "n" && outer.point.x == 1 && outer.point.y == 2));
  a.send(NamedV2{3, "x"});
  auto named = b.recv<NamedV2>();
  CHECK((named.x == 3 && named.label == "x"));
  a.send(
      std::vector<std::variant<int, std::tuple<int, std::string>>>{1, std::make_tuple(2, std::string("b"))});
  auto items = b.recv<std::vector<std::variant<int, std::tuple<int, std::string>>>>();
  REQUIRE(items.size() == 2);
  CHECK(std::get<1>(std::get<std::tuple<int, std::string>>(items[1])) == "b");
  a.send(std::array<char, 3>{'a', 'b', 'c'});
  CHECK((b.recv<std::array<char, 3>>() == std::array<char, 3>{'a', 'b', 'c'}));
  a.send(std::make_pair(std::optional<PointV2>(), std::array<int, 2>{4, 5}));
  auto pair = b.recv<std::pair<std::optional<PointV2>, std::array<int, 2>>>();
  CHECK((!pair.first && pair.second[1] == 5));
}

TEST_CASE("codec: mp::Object::as<T> is as strict as recv<T>", "[codec]") {
  mp::Object point = PointV1{7};
  CHECK_THROWS_AS(point.as<PointV2>(), mp::TypeError);
  CHECK_THROWS_AS((mp::Object(mp::Object::Array{1, 2, 3}).as<std::tuple<int, int>>()), mp::TypeError);
  CHECK((mp::Object(mp::Object::Array{1, 2}).as<std::tuple<int, int>>() == std::make_tuple(1, 2)));
}

// ---- what a Pool call sends: exactly what the worker decodes --------------------------------

namespace {
std::string scaled(std::string name, double scale) {
  return name + "*" + std::to_string(static_cast<int>(scale * 2));
}
double half(double x) { return x / 2; }
int add(int a, int b) { return a + b; }
int answer() { return 42; }
PointV2 swapped(PointV2 p) { return {p.y, p.x}; }
} // namespace

TEST_CASE(
    "codec: pool arguments travel as the function's parameter types, converted in the caller as a "
    "direct call converts them",
    "[codec][pool]") {
  mp::Pool pool(1);
  CHECK(pool.apply(scaled, "x", 2) == "x*4");  // const char* -> std::string, int -> double
  CHECK(pool.apply(answer) == 42);
  CHECK(pool.map(half, std::vector<int>{1, 4}) == std::vector<double>{0.5, 2.0});
  CHECK(pool.starmap(add, std::vector<std::pair<int, int>>{{1, 2}, {3, 4}}) == std::vector<int>{3, 7});
  CHECK(pool.starmap(add, std::vector<std::array<long, 2>>{{5, 6}}) == std::vector<int>{11});
  auto point = pool.apply(swapped, PointV2{1, 2});
  CHECK((point.x == 2 && point.y == 1));
  pool.close();
  pool.join();
}

// ---- what a message may cost once decoded: issue 11, item 11 -------------------------------------

TEST_CASE("codec: the default message ceiling is 64 MiB, and raising it is one call", "[codec]") {
  CHECK(mp::max_message_size() == std::size_t{64} << 20);
  MessageCeiling ceiling(std::size_t{1} << 30);
  CHECK(mp::max_message_size() == std::size_t{1} << 30);
}

TEST_CASE(
    "codec: a valid 4 MiB message of nils is refused before it is decoded, costing no 25x its size, "
    "and the connection goes on",
    "[codec]") {
  auto [a, b] = mp::Pipe();
  const long before = peak_rss_kib();
  {
    frame_writer writer(a.fileno(), array_of_nils(4u << 20));
    CHECK_THROWS_WITH(b.recv(),
                      Catch::Contains("would take more than") && Catch::Contains("mp::set_max_message_size"));
  }
  const long grown_kib = peak_rss_kib() - before;
  // The frame itself (4 MiB, twice: the writer's copy and the receiver's) and no tree of 100 MB.
  CHECK(grown_kib < 32 * 1024);
  a.send(std::string("next"));
  CHECK(b.recv<std::string>() == "next");
}

TEST_CASE("codec: a message of many one-byte values decodes within a raised message ceiling", "[codec]") {
  auto [a, b] = mp::Pipe();
  const std::uint32_t n = 1u << 20;  // 1 MiB of nils: 24 MiB once decoded
  {
    MessageCeiling ceiling(std::size_t{4} << 20);
    frame_writer writer(a.fileno(), array_of_nils(n));
    CHECK_THROWS_WITH(b.recv(), Catch::Contains("would take more than 8388648 bytes"));
  }
  MessageCeiling ceiling(std::size_t{32} << 20);
  frame_writer writer(a.fileno(), array_of_nils(n));
  CHECK(b.recv<std::vector<std::optional<int>>>().size() == n);
}

TEST_CASE("codec: values of a few bytes each decode at any size under the ceiling", "[codec]") {
  auto [a, b] = mp::Pipe();
  MessageCeiling ceiling(std::size_t{1} << 20);
  // 200,000 ints of 3 bytes each: 600 KB on the wire, 4.8 MB of tree, within 8x its size.
  std::vector<int> values(200'000, 1000);
  frame_writer writer(a.fileno(), mp::detail::encode(values));
  CHECK(b.recv<std::vector<int>>() == values);
}

TEST_CASE("codec: converting a local value to and from mp::Object is not bounded as a message is",
          "[codec]") {
  MessageCeiling ceiling(std::size_t{1} << 20);
  std::vector<int> zeros(200'000, 0);  // 200 KB packed, 4.8 MB of tree: over the budget of a message
  CHECK_THROWS_AS(mp::detail::decode<std::vector<int>>(mp::detail::encode(zeros)), mp::Error);
  mp::Object object = zeros;
  CHECK(object.as_array().size() == zeros.size());
  CHECK(object.as<std::vector<int>>() == zeros);
}
