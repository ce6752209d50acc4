#include "multiproc/detail/codec.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

namespace multiproc::detail {

namespace {
// Deeper nesting than this is refused: conversions recurse, and a hostile frame of nested
// one-element arrays must not overflow the stack.
constexpr std::size_t max_nesting = 512;

// The first chunk of the zone that holds a decoded value. msgpack's default of 8 KiB is past
// malloc's per-thread cache, so every small message paid malloc's slow path to get and free it
// (a tenth of the instructions of a Connection round trip). One msgpack::object per payload
// byte holds a small value whole; a larger one grows the zone as before.
std::size_t zone_chunk_for(std::size_t payload_size) {
  return std::min<std::size_t>(64 + sizeof(msgpack::object) * payload_size, MSGPACK_ZONE_CHUNK_SIZE);
}
} // namespace

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> out(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                                  &std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(mangled);
}

std::string msgpack_type_name(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return "None";
    case msgpack::type::BOOLEAN: return "bool";
    case msgpack::type::POSITIVE_INTEGER:
    case msgpack::type::NEGATIVE_INTEGER: return "int";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return "float";
    case msgpack::type::STR: return "str";
    case msgpack::type::BIN: return "bytes";
    case msgpack::type::ARRAY: return "list of " + std::to_string(o.via.array.size);
    case msgpack::type::MAP: return "dict of " + std::to_string(o.via.map.size);
    case msgpack::type::EXT: return "ext";
  }
  return "unknown";
}

void throw_type_mismatch(const msgpack::object& o, const std::string& wanted) {
  throw TypeError("received a MessagePack " + msgpack_type_name(o) + " that does not decode as " + wanted);
}

msgpack::object_handle unpack_untrusted(std::string_view payload) {
  if (payload.empty()) throw Error("received an empty payload where a MessagePack value was expected");
  // No container or string can hold more elements or bytes than the payload has bytes, so the
  // payload's size bounds every allocation msgpack makes while parsing it.
  const std::size_t n = payload.size();
  msgpack::unpack_limit limit(n, n, n, n, n, max_nesting);
  std::size_t offset = 0;
  msgpack::object_handle handle;
  try {
    auto zone = std::make_unique<msgpack::zone>(zone_chunk_for(n));
    bool referenced = false;
    auto obj = msgpack::unpack(*zone, payload.data(), n, offset, referenced, nullptr, nullptr, limit);
    handle = msgpack::object_handle(obj, std::move(zone));
  } catch (const msgpack::insufficient_bytes&) {
    throw Error("received a truncated MessagePack value (" + std::to_string(n) + " bytes)");
  } catch (const msgpack::size_overflow&) {
    throw Error("received a MessagePack value whose sizes or nesting exceed its own length");
  } catch (const msgpack::unpack_error& e) {
    throw Error(std::string("received bytes that are not MessagePack: ") + e.what());
  } catch (const std::bad_alloc&) {
    throw Error("received a MessagePack value too large to decode");
  }
  if (offset != n) {
    throw Error("received " + std::to_string(n - offset) + " trailing bytes after a MessagePack value");
  }
  return handle;
}

} // namespace multiproc::detail
