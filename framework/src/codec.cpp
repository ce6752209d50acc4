#include "multiproc/detail/codec.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <memory>

#include "multiproc/detail/wire.hpp"

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

struct decoded_size_exceeded {
  std::size_t elements;
};

// msgpack's visitor that builds the tree of objects, made to count what the tree costs (its
// objects, and the bytes of the strings, binaries and extensions it copies) before each part is
// allocated, and to stop before the cost passes the budget. The parser calls the visitor through
// its static type, so these hide the base's members.
class budgeted_visitor : public msgpack::detail::create_object_visitor {
public:
  budgeted_visitor(const msgpack::unpack_limit& limit, std::size_t budget)
      : create_object_visitor(nullptr, nullptr, limit), budget_(budget) {}
  bool start_array(std::uint32_t n) {
    elements_ += n;
    spend(std::size_t{n} * sizeof(msgpack::object));
    return create_object_visitor::start_array(n);
  }
  bool start_map(std::uint32_t n) {
    elements_ += std::size_t{2} * n;
    spend(std::size_t{n} * sizeof(msgpack::object_kv));
    return create_object_visitor::start_map(n);
  }
  bool visit_str(const char* p, std::uint32_t size) {
    spend(size);
    return create_object_visitor::visit_str(p, size);
  }
  bool visit_bin(const char* p, std::uint32_t size) {
    spend(size);
    return create_object_visitor::visit_bin(p, size);
  }
  bool visit_ext(const char* p, std::uint32_t size) {
    spend(size);
    return create_object_visitor::visit_ext(p, size);
  }

private:
  void spend(std::size_t bytes) {
    cost_ += bytes;
    if (cost_ > budget_) throw decoded_size_exceeded{elements_};
  }
  std::size_t budget_;
  std::size_t cost_ = 0;
  std::size_t elements_ = 0;
};

// max_decoded_size's body, which calls within this file inline (an exported function is called
// through the PLT).
std::size_t decoded_budget(std::size_t payload_size) noexcept {
  constexpr std::size_t bytes_per_payload_byte = 8;
  return std::max(max_frame_size(), bytes_per_payload_byte * payload_size);
}
} // namespace

std::size_t max_decoded_size(std::size_t payload_size) noexcept { return decoded_budget(payload_size); }

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

void throw_type_mismatch(const msgpack::object& o, const std::string& wanted, const std::string& reason) {
  throw TypeError("received a MessagePack " + msgpack_type_name(o) + " that does not decode as " + wanted +
                  (reason.empty() ? "" : ": " + reason));
}

void throw_arity_mismatch(const msgpack::object& o, std::size_t n, const std::string& type) {
  throw shape_mismatch{type + " decodes only from a list of exactly " + std::to_string(n) + ", not from a " +
                       msgpack_type_name(o)};
}

// ---- fields_checker ------------------------------------------------------------------------

namespace {
const char* sender_hint = " (were sender and receiver built with different versions of the type?)";
}

void fields_checker::pack_array(std::size_t n) {
  if (o_.type != msgpack::type::ARRAY || o_.via.array.size != n)
    throw shape_mismatch{type_() + " has " + std::to_string(n) +
                         " fields and decodes only from a list of exactly " + std::to_string(n) +
                         ", not from a " + msgpack_type_name(o_) + sender_hint};
}

void fields_checker::pack_map(std::size_t n) {
  if (o_.type != msgpack::type::MAP || o_.via.map.size != n)
    throw shape_mismatch{type_() + " has " + std::to_string(n) +
                         " fields and decodes only from a dict of exactly its " + std::to_string(n) +
                         " keys, not from a " + msgpack_type_name(o_) + sender_hint};
}

void fields_checker::take_key(std::string_view key) {
  for (const auto& kv : std::span(o_.via.map.ptr, o_.via.map.size)) {
    if (kv.key.type == msgpack::type::STR &&
        std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key) {
      value_ = &kv.val;
      return;
    }
  }
  throw shape_mismatch{type_() + "'s field '" + std::string(key) + "' is missing" + sender_hint};
}

const msgpack::object& fields_checker::next_field() {
  if (o_.type == msgpack::type::ARRAY) return o_.via.array.ptr[next_++];
  if (!value_) throw shape_mismatch{type_() + " names its map fields with keys that are not strings"};
  return *std::exchange(value_, nullptr);
}

namespace {
// Bounded: the decoded tree within decoded_budget(); else unbounded (for bytes packed locally).
// A template so that each caller gets its own copy, inlined: this is on every message's path.
template <bool Bounded>
msgpack::object_handle unpack_within(std::string_view payload) {
  if (payload.empty()) throw Error("received an empty payload where a MessagePack value was expected");
  // No container or string can hold more elements or bytes than the payload has bytes, so the
  // payload's size bounds every allocation msgpack makes while parsing it.
  const std::size_t n = payload.size();
  const std::size_t budget = Bounded ? decoded_budget(n) : std::numeric_limits<std::size_t>::max();
  msgpack::unpack_limit limit(n, n, n, n, n, max_nesting);
  std::size_t offset = 0;
  msgpack::object_handle handle;
  try {
    auto zone = std::make_unique<msgpack::zone>(zone_chunk_for(n));
    budgeted_visitor visitor(limit, budget);
    visitor.set_zone(*zone);
    msgpack::detail::parse_imp(payload.data(), n, offset, visitor);
    handle = msgpack::object_handle(visitor.data(), std::move(zone));
  } catch (const decoded_size_exceeded& e) {
    throw Error("received a message of " + std::to_string(n) + " bytes holding at least " +
                std::to_string(e.elements) + " values, which would take more than " + std::to_string(budget) +
                " bytes to decode (the larger of the message ceiling and 8 times the message's size); "
                "raise the ceiling with mp::set_max_message_size() in the receiving process");
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

} // namespace

msgpack::object_handle unpack_untrusted(std::string_view payload) { return unpack_within<true>(payload); }

msgpack::object_handle unpack_local(std::string_view payload) { return unpack_within<false>(payload); }

} // namespace multiproc::detail
