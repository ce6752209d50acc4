#include "multiproc/object.hpp"

#include <charconv>
#include <cmath>
#include <ostream>
#include <sstream>

namespace multiproc {

namespace {

int rank(Object::Kind k) {
  using K = Object::Kind;
  switch (k) {
    case K::nil: return 0;
    case K::boolean: return 1;
    case K::int64:
    case K::uint64:
    case K::float64: return 2;  // numbers compare by value, as in Python
    case K::string: return 3;
    case K::binary: return 4;
    case K::array: return 5;
    case K::map: return 6;
  }
  return 7;
}

template <class A, class B>
int three_way(const A& a, const B& b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

// Numbers: exact between integers; doubles against integers through long double; NaN sorts
// after every number and equals itself, so the order stays total.
int compare_numbers(const Object& a, const Object& b) {
  using K = Object::Kind;
  auto as_ld = [](const Object& o) -> long double {
    switch (o.kind()) {
      case K::int64: return static_cast<long double>(o.as_int64());
      case K::uint64: return static_cast<long double>(o.as_uint64());
      default: return static_cast<long double>(o.as_double());
    }
  };
  bool a_nan = a.kind() == K::float64 && std::isnan(a.as_double());
  bool b_nan = b.kind() == K::float64 && std::isnan(b.as_double());
  if (a_nan || b_nan) return three_way(a_nan, b_nan);
  if (a.kind() == K::int64 && b.kind() == K::int64) return three_way(a.as_int64(), b.as_int64());
  if (a.kind() == K::uint64 && b.kind() == K::uint64) return three_way(a.as_uint64(), b.as_uint64());
  if (a.kind() == K::int64 && b.kind() == K::uint64) return -1;  // uint64 kind only holds > INT64_MAX
  if (a.kind() == K::uint64 && b.kind() == K::int64) return 1;
  return three_way(as_ld(a), as_ld(b));
}

void write_string_repr(std::ostream& os, std::string_view s, bool bytes) {
  if (bytes) os << 'b';
  os << '\'';
  for (unsigned char c : s) {
    switch (c) {
      case '\\': os << "\\\\"; break;
      case '\'': os << "\\'"; break;
      case '\n': os << "\\n"; break;
      case '\r': os << "\\r"; break;
      case '\t': os << "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f || (bytes && c >= 0x80)) {
          static const char* hex = "0123456789abcdef";
          os << "\\x" << hex[c >> 4] << hex[c & 15];
        } else {
          os << c;
        }
    }
  }
  os << '\'';
}

void write_double_repr(std::ostream& os, double d) {
  if (std::isnan(d)) {
    os << "nan";
    return;
  }
  if (std::isinf(d)) {
    os << (d < 0 ? "-inf" : "inf");
    return;
  }
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  std::string_view s(buf, static_cast<std::size_t>(end - buf));
  os << s;
  if (s.find_first_of(".e") == std::string_view::npos) os << ".0";
}

} // namespace

int Object::compare(const Object& a, const Object& b) {
  int ra = rank(a.kind()), rb = rank(b.kind());
  if (ra != rb) return three_way(ra, rb);
  switch (a.kind()) {
    case Kind::nil: return 0;
    case Kind::boolean: return three_way(a.as_bool(), b.as_bool());
    case Kind::int64:
    case Kind::uint64:
    case Kind::float64: return compare_numbers(a, b);
    case Kind::string: return three_way(a.as_string(), b.as_string());
    case Kind::binary: return three_way(a.as_binary().bytes, b.as_binary().bytes);
    case Kind::array: {
      const auto &x = a.as_array(), &y = b.as_array();
      for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
        if (int c = compare(x[i], y[i])) return c;
      return three_way(x.size(), y.size());
    }
    case Kind::map: {
      const auto &x = a.as_map(), &y = b.as_map();
      for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
        if (int c = compare(x[i].first, y[i].first)) return c;
        if (int c = compare(x[i].second, y[i].second)) return c;
      }
      return three_way(x.size(), y.size());
    }
  }
  return 0;
}

std::ostream& operator<<(std::ostream& os, const Object& o) {
  using K = Object::Kind;
  switch (o.kind()) {
    case K::nil: return os << "None";
    case K::boolean: return os << (o.as_bool() ? "True" : "False");
    case K::int64: return os << o.as_int64();
    case K::uint64: return os << o.as_uint64();
    case K::float64: write_double_repr(os, o.as_double()); return os;
    case K::string: write_string_repr(os, o.as_string(), false); return os;
    case K::binary: write_string_repr(os, o.as_binary().bytes, true); return os;
    case K::array: {
      os << '[';
      const char* sep = "";
      for (const auto& e : o.as_array()) {
        os << sep << e;
        sep = ", ";
      }
      return os << ']';
    }
    case K::map: {
      os << '{';
      const char* sep = "";
      for (const auto& [k, v] : o.as_map()) {
        os << sep << k << ": " << v;
        sep = ", ";
      }
      return os << '}';
    }
  }
  return os;
}

std::string Object::repr() const {
  std::ostringstream os;
  os << *this;
  return os.str();
}

Object Object::from_msgpack(std::string_view encoded) { return detail::decode<Object>(encoded); }

} // namespace multiproc

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  const msgpack::object& convert<multiproc::Object>::operator()(const msgpack::object& in,
                                                                 multiproc::Object& out) const {
    using multiproc::Object;
    switch (in.type) {
      case msgpack::type::NIL: out = Object(); break;
      case msgpack::type::BOOLEAN: out = Object(in.via.boolean); break;
      case msgpack::type::POSITIVE_INTEGER: out = Object(in.via.u64); break;
      case msgpack::type::NEGATIVE_INTEGER: out = Object(in.via.i64); break;
      case msgpack::type::FLOAT32:
      case msgpack::type::FLOAT64: out = Object(in.via.f64); break;
      case msgpack::type::STR: out = Object(std::string(in.via.str.ptr, in.via.str.size)); break;
      case msgpack::type::BIN: out = Object(Object::Binary{std::string(in.via.bin.ptr, in.via.bin.size)}); break;
      case msgpack::type::ARRAY: {
        Object::Array a;
        a.reserve(in.via.array.size);
        for (uint32_t i = 0; i < in.via.array.size; ++i) a.push_back(in.via.array.ptr[i].as<Object>());
        out = Object(std::move(a));
        break;
      }
      case msgpack::type::MAP: {
        Object::Map m;
        m.reserve(in.via.map.size);
        for (uint32_t i = 0; i < in.via.map.size; ++i)
          m.emplace_back(in.via.map.ptr[i].key.as<Object>(), in.via.map.ptr[i].val.as<Object>());
        out = Object(std::move(m));
        break;
      }
      case msgpack::type::EXT: throw msgpack::type_error();
    }
    return in;
  }
  } // namespace adaptor
}
} // namespace msgpack
