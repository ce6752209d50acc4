// The registry behind MULTIPROC_EXPORT (node.hpp): functions that may run on another host, found
// there by name. On one host a function crosses by address or by its offset in its ELF object
// (function_id.hpp); another host runs another build of the program, so only a name both builds
// registered can identify the code.
#pragma once

#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "multiproc/detail/pool_task.hpp"

namespace multiproc {
class ActorContext;
}

namespace multiproc::detail {

struct ActorSeat;
// Runs an exported actor init in the actor's process: args are its arguments after the context,
// packed as one MessagePack array (actor.hpp defines it).
using actor_starter = void (*)(const ActorSeat& seat, std::string_view args);
template <auto F>
void start_exported_actor(const ActorSeat& seat, std::string_view args);

struct exported_function {
  const char* name;
  erased_fn fn;
  chunk_runner each;     // map/imap (one argument); null when the function takes another number
  chunk_runner star;     // apply/starmap; null for an actor init
  actor_starter actor;   // an actor init, init(ActorContext&, args...); else null
};

template <class Fn>
constexpr bool is_actor_init() {
  using args = typename fn_traits<Fn>::args;
  if constexpr (std::tuple_size_v<args> == 0) {
    return false;
  } else {
    return std::is_same_v<std::tuple_element_t<0, args>, ActorContext>;
  }
}

// Registers at static initialization; a name registered twice keeps the first.
bool register_export(const exported_function& entry);
// nullptr when nothing is exported under that name / at that address.
const exported_function* find_export(const std::string& name);
const exported_function* find_export(erased_fn fn);

template <auto F>
bool export_function(const char* name) {
  using Fn = decltype(F);
  static_assert(std::is_pointer_v<Fn> && std::is_function_v<std::remove_pointer_t<Fn>>,
                "MULTIPROC_EXPORT takes a function at namespace scope");
  if constexpr (is_actor_init<Fn>()) {
    return register_export({name, reinterpret_cast<erased_fn>(F), nullptr, nullptr, &start_exported_actor<F>});
  } else {
    chunk_runner each = nullptr;
    if constexpr (fn_traits<Fn>::arity == 1) each = &run_each<Fn>;
    return register_export({name, reinterpret_cast<erased_fn>(F), each, &run_star<Fn>, nullptr});
  }
}

} // namespace multiproc::detail
