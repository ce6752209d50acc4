// What a BaseManager's server knows about its typeids: a built-in kind with default arguments,
// or a user's class with methods exposed by name. Filled by BaseManager::register_*() before the
// server starts; read-only afterwards, in the server (a forked copy or this process).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <variant>

#include "multiproc/detail/codec.hpp"

namespace multiproc::detail {

// A user's class as the server runs it: make() builds an instance, methods decode their
// arguments from a MessagePack array, run on the instance and return their encoded result.
struct ExposedClass {
  using Method = std::function<std::string(void* instance, const msgpack::object& args)>;
  std::string name;
  std::function<std::shared_ptr<void>()> make;
  std::unordered_map<std::string, Method> methods;
};

struct BuiltinTypeid {
  std::string kind;      // "Queue", "dict", ...
  std::string init;      // encoded array of default factory arguments
};

struct TypeidSpec {
  std::variant<BuiltinTypeid, std::shared_ptr<const ExposedClass>> what;
  bool shared = false;   // one object for every caller (the seed's job queues) vs one per call
};

using TypeidRegistry = std::map<std::string, TypeidSpec, std::less<>>;

// Wraps a member function as an ExposedClass::Method.
template <class T, class R, class... A, class M>
ExposedClass::Method expose_method(M method) {
  return [method](void* instance, const msgpack::object& args) -> std::string {
    auto values = convert<std::tuple<std::decay_t<A>...>>(args);
    auto* self = static_cast<T*>(instance);
    if constexpr (std::is_void_v<R>) {
      std::apply([&](auto&... a) { (self->*method)(a...); }, values);
      return encode(msgpack::type::nil_t{});
    } else {
      return encode(std::apply([&](auto&... a) { return (self->*method)(a...); }, values));
    }
  };
}

} // namespace multiproc::detail
