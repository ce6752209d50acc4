// The registry behind MULTIPROC_EXPORT (node.hpp): functions that may run on another host, found
// there by name. On one host a function crosses by address or by its offset in its ELF object
// (function_id.hpp); another host runs another build of the program, so only a name both builds
// registered can identify the code.
#pragma once

#include <string>

#include "multiproc/detail/pool_task.hpp"

namespace multiproc::detail {

struct exported_function {
  const char* name;
  erased_fn fn;
  chunk_runner each;  // map/imap (one argument); null when the function takes another number
  chunk_runner star;  // apply/starmap
};

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
  chunk_runner each = nullptr;
  if constexpr (fn_traits<Fn>::arity == 1) each = &run_each<Fn>;
  return register_export({name, reinterpret_cast<erased_fn>(F), each, &run_star<Fn>});
}

} // namespace multiproc::detail
