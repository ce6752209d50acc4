// What crosses a process boundary of a user's function: its address, as a plain function pointer.
// Forked children share the parent's addresses; spawned and forkserver children translate them
// (framework/src/function_id.hpp).
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

namespace multiproc::detail {

// A function, a function pointer or a captureless lambda (which converts to one with unary +).
template <class F>
concept plain_function = requires(F f) {
  requires std::is_function_v<std::remove_pointer_t<decltype(+f)>>;
};

template <class Fn>
struct fn_traits;
template <class R, class... P>
struct fn_traits<R (*)(P...)> {
  using result = R;
  using args = std::tuple<std::decay_t<P>...>;
  static constexpr std::size_t arity = sizeof...(P);
};
template <class R, class... P>
struct fn_traits<R (*)(P...) noexcept> : fn_traits<R (*)(P...)> {};

template <class F>
using fn_ptr_t = decltype(+std::declval<F&>());
template <class F>
using result_of_t = std::decay_t<typename fn_traits<fn_ptr_t<F>>::result>;

using erased_fn = void (*)();

} // namespace multiproc::detail
