#include <catch2/catch.hpp>

#include <map>
#include <sstream>

#include "multiproc/multiproc.hpp"

namespace mp = multiproc;

namespace {
struct Point {
  int x = 0;
  std::string label;
  MSGPACK_DEFINE(x, label);
};
} // namespace

TEST_CASE("object: prints as Python's repr", "[object]") {
  mp::Object o(mp::Object::Array{1, "x", mp::Object()});
  CHECK(o.repr() == "[1, 'x', None]");
  mp::Object m(mp::Object::Map{{1, "a"}, {0.25, true}});
  CHECK(m.repr() == "{1: 'a', 0.25: True}");
  CHECK(mp::Object(1.0).repr() == "1.0");
  CHECK(mp::Object("it's").repr() == "'it\\'s'");
}

TEST_CASE("object: converts implicitly from packable types and back with as<T>", "[object]") {
  mp::Object v = std::vector<int>{1, 2, 3};
  CHECK(v.repr() == "[1, 2, 3]");
  CHECK(v.as<std::vector<int>>() == std::vector<int>{1, 2, 3});
  mp::Object p = Point{3, "p"};
  CHECK(p.as<Point>().label == "p");
  CHECK(mp::Object(std::optional<int>{}).is_nil());
}

TEST_CASE("object: as<T> of the wrong type throws TypeError naming both types", "[object]") {
  mp::Object s = "text";
  try {
    (void)s.as<int>();
    FAIL("no exception");
  } catch (const mp::TypeError& e) {
    CHECK_THAT(e.what(), Catch::Contains("str") && Catch::Contains("int"));
  }
}

TEST_CASE("object: total order makes Objects usable as map keys, numbers by value", "[object]") {
  std::map<mp::Object, int> d;
  d[1] = 1;
  d["2"] = 2;
  d[0.25] = 3;
  d[1.0] = 4;  // Python: 1 == 1.0, same key
  CHECK(d.size() == 3);
  CHECK(d[1] == 4);
  CHECK(mp::Object() < mp::Object(false));
  CHECK(mp::Object(-1) < mp::Object(std::uint64_t(1) << 63));
}

TEST_CASE("object: variant, tuple and optional round-trip through the codec", "[object][codec]") {
  using V = std::variant<int, std::string>;
  auto bytes = mp::detail::encode(std::make_tuple(V{"s"}, std::optional<double>{2.5}, std::map<std::string, int>{{"a", 1}}));
  auto t = mp::detail::decode<std::tuple<V, std::optional<double>, std::map<std::string, int>>>(bytes);
  CHECK(std::get<std::string>(std::get<0>(t)) == "s");
  CHECK(std::get<1>(t) == 2.5);
  CHECK(std::get<2>(t).at("a") == 1);
}

TEST_CASE("codec: garbage, truncation, hostile sizes and deep nesting are Errors, not crashes", "[codec]") {
  CHECK_THROWS_AS(mp::detail::decode<int>(std::string("\xc1", 1)), mp::Error);
  CHECK_THROWS_AS(mp::detail::decode<std::string>(std::string("\xdb\xff\xff\xff\xff", 5)), mp::Error);
  CHECK_THROWS_AS(mp::detail::decode<std::vector<int>>(std::string("\xdd\xff\xff\xff\xff\x01", 6)), mp::Error);
  CHECK_THROWS_AS(mp::detail::decode<mp::Object>(std::string(100000, '\x91')), mp::Error);
  CHECK_THROWS_AS(mp::detail::decode<int>(std::string("\x01\x02", 2)), mp::Error);
  CHECK_THROWS_AS(mp::detail::decode<int>(""), mp::Error);
  CHECK_THROWS_AS(mp::detail::decode<int>(mp::detail::encode(std::string("x"))), mp::TypeError);
}
