// How a call crosses into a child that does not share the parent's memory (start methods spawn
// and forkserver), as CPython's multiprocessing.reduction: the target as a function identity,
// each argument packed with MessagePack, and library handles reduced to a packed header plus
// their descriptors, which travel with SCM_RIGHTS and are rebuilt into the same object there.
//
// The extension point: a handle type H becomes transferable by specializing reducer<H>, next to
// H (its header; the bodies may live in its .cpp), with
//   static void reduce(const H&, msgpack::packer<Buffer>&, Reduction&);  // packs one value
//   static H rebuild(const msgpack::object&, ReceivedFds&);             // the same object again
// reduce packs a header (one MessagePack value, usually an array) that names each descriptor by
// the index Reduction::add_fd returned; rebuild reads it back and takes those descriptors.
// Shared memory reduces with reduce_mapping/rebuild_mapping (detail/shm.hpp); a handle made of
// others packs an array of their reductions and rebuilds each with reduced_fields().
// Every library handle has one: Connection, the queues, the synchronize primitives, Value and
// Array (their headers), and what builds on them reuses these.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/function.hpp"
#include "multiproc/errors.hpp"

namespace multiproc::detail {

// Descriptors a reduction sends. They stay owned by the handles, which outlive the send.
struct Reduction {
  std::vector<int> fds;
  // The index the child passes to ReceivedFds::take.
  std::size_t add_fd(int fd) {
    fds.push_back(fd);
    return fds.size() - 1;
  }
};

// Descriptors a child received; each is taken (owned) by the handle rebuilt around it, the rest
// are closed with this object.
class ReceivedFds {
public:
  explicit ReceivedFds(std::vector<int> fds) : fds_(std::move(fds)) {}
  ReceivedFds(const ReceivedFds&) = delete;
  ReceivedFds& operator=(const ReceivedFds&) = delete;
  ~ReceivedFds();
  // Error when the index is out of range or already taken (a malformed message).
  int take(std::size_t index);
  // A fresh descriptor for the same open file, leaving the received one here.
  int duplicate(std::size_t index) const;

private:
  std::vector<int> fds_;
};

template <class T>
struct reducer;  // specialized by each handle type

template <class T>
concept reducible = requires(const T& value, msgpack::packer<Buffer>& pk, Reduction& r, const msgpack::object& o,
                             ReceivedFds& fds) {
  reducer<T>::reduce(value, pk, r);
  { reducer<T>::rebuild(o, fds) } -> std::same_as<T>;
};

// A duration crosses as its count (MessagePack has no duration of its own).
template <class Rep, class Period>
struct reducer<std::chrono::duration<Rep, Period>> {
  static void reduce(const std::chrono::duration<Rep, Period>& d, msgpack::packer<Buffer>& pk, Reduction&) {
    pk.pack(d.count());
  }
  static std::chrono::duration<Rep, Period> rebuild(const msgpack::object& o, ReceivedFds&) {
    return std::chrono::duration<Rep, Period>(convert<Rep>(o));
  }
};

// A function pointer crosses by its identity, as a target does: the offset in its ELF object,
// checked against the object's build-id (framework/src/function_id.hpp). nullptr crosses too.
void reduce_function(msgpack::packer<Buffer>& pk, erased_fn fn);
erased_fn rebuild_function(const msgpack::object& o);
template <class R, class... P>
struct reducer<R (*)(P...)> {
  static void reduce(R (*fn)(P...), msgpack::packer<Buffer>& pk, Reduction&) {
    reduce_function(pk, reinterpret_cast<erased_fn>(fn));
  }
  static auto rebuild(const msgpack::object& o, ReceivedFds&) { return reinterpret_cast<R (*)(P...)>(rebuild_function(o)); }
};

// A descriptor the child receives as its own (the sender keeps and closes its copy); -1 crosses
// as "none".
struct Descriptor {
  int fd = -1;
};
template <>
struct reducer<Descriptor> {
  static void reduce(const Descriptor& d, msgpack::packer<Buffer>& pk, Reduction& r) {
    if (d.fd < 0)
      pk.pack_nil();
    else
      pk.pack(r.add_fd(d.fd));
  }
  static Descriptor rebuild(const msgpack::object& o, ReceivedFds& fds) {
    if (o.type == msgpack::type::NIL) return {};
    return {fds.take(convert<std::size_t>(o))};
  }
};

template <class T>
constexpr bool transferable = reducible<T> || packable<T>;

// The n fields a composite reducer packed as one array; TypeError for anything else.
inline std::span<const msgpack::object> reduced_fields(const msgpack::object& o, std::size_t n, const char* handle) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != n) throw_arity_mismatch(o, n, handle);
  return {o.via.array.ptr, n};
}

// An optional handle (a Value's lock) crosses as nil or as the handle.
template <class H>
  requires reducible<H>
struct reducer<std::optional<H>> {
  static void reduce(const std::optional<H>& h, msgpack::packer<Buffer>& pk, Reduction& r) {
    if (h)
      reducer<H>::reduce(*h, pk, r);
    else
      pk.pack_nil();
  }
  static std::optional<H> rebuild(const msgpack::object& o, ReceivedFds& fds) {
    if (o.is_nil()) return std::nullopt;
    return reducer<H>::rebuild(o, fds);
  }
};

template <class T>
void reduce_value(msgpack::packer<Buffer>& pk, Reduction& r, const T& value) {
  if constexpr (reducible<T>)
    reducer<T>::reduce(value, pk, r);
  else
    pk.pack(value);
}

template <class T>
T rebuild_value(const msgpack::object& o, ReceivedFds& fds) {
  if constexpr (reducible<T>)
    return reducer<T>::rebuild(o, fds);
  else
    return convert<T>(o);
}

// What a spawned or forkserver child runs: runner(fn, the unpacked args, fds).
using child_runner = void (*)(erased_fn fn, const msgpack::object& args, ReceivedFds& fds);
struct SpawnTarget {
  child_runner runner = nullptr;
  erased_fn fn = nullptr;
  std::string args;      // one MessagePack array
  std::vector<int> fds;  // borrowed from the argument handles
};

void check_argument_count(const msgpack::object& args, std::size_t expected);

template <class Fn, class... A>
void run_target(erased_fn fn, const msgpack::object& args, ReceivedFds& fds) {
  check_argument_count(args, sizeof...(A));
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    // Braced initialization rebuilds the arguments in order, as the descriptors were added.
    std::tuple<A...> values{rebuild_value<A>(args.via.array.ptr[I], fds)...};
    std::apply(reinterpret_cast<Fn>(fn), values);
  }(std::index_sequence_for<A...>{});
}

[[noreturn]] void throw_untransferable_target(const std::string& type);
[[noreturn]] void throw_untransferable_argument(std::size_t position, const std::string& type);

template <class... A>
constexpr std::size_t first_untransferable() {
  constexpr bool ok[] = {transferable<A>..., false};
  std::size_t i = 0;
  while (ok[i]) ++i;
  return i;
}

// Packs the values (each one transferable) as the target's arguments, one array.
template <class Tuple>
void reduce_arguments(SpawnTarget& out, const Tuple& args) {
  Buffer buf;
  msgpack::packer<Buffer> pk(buf);
  Reduction reduction;
  pk.pack_array(std::tuple_size_v<Tuple>);
  std::apply([&](const auto&... a) { (reduce_value(pk, reduction, a), ...); }, args);
  out.args = std::move(buf.data);
  out.fds = std::move(reduction.fds);
}

// The call target(args...) as a SpawnTarget; ValueError naming what cannot cross.
template <plain_function F, class... A>
SpawnTarget make_spawn_target(const F& target, const std::tuple<A...>& args) {
  if constexpr (constexpr auto bad = first_untransferable<A...>(); bad < sizeof...(A)) {
    throw_untransferable_argument(bad + 1, type_name<std::tuple_element_t<bad, std::tuple<A...>>>());
  } else {
    SpawnTarget out{&run_target<fn_ptr_t<const F>, A...>, reinterpret_cast<erased_fn>(+target), {}, {}};
    reduce_arguments(out, args);
    return out;
  }
}

} // namespace multiproc::detail
