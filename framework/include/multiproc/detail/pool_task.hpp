// What pool.hpp's templates need to turn a call into tasks and results back into values.
//
// A task crosses to a worker by identity: the user's function pointer and a type-erased runner
// (an instantiation of run_each/run_star below), valid addresses in a forked worker and
// translated once per function in a spawn or forkserver one (framework/src/pool_worker.hpp).
// A chunk travels as [runner][fn][MessagePack array of argument items]; the worker answers with a
// status byte and either the MessagePack array of results or [type name, message].
// In the parent, a job receives its chunks' results (under the pool's lock, on whichever thread
// read them) and wakes its waiters; callbacks run later on the pool's result thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/function.hpp"
#include "multiproc/detail/number_array.hpp"
#include "multiproc/detail/wire.hpp"
#include "multiproc/errors.hpp"

namespace multiproc::detail {

// ---- the user's function -------------------------------------------------------------------

// The values a task's function receives: its parameters, decayed.
template <class F>
using params_of_t = typename fn_traits<fn_ptr_t<F>>::args;

// ---- compile-time checks of a call -----------------------------------------------------------
// Each check has one static_assert per way a call can be wrong, and at most one of them fires:
// the compiler prints it as its first error, right after the line "In instantiation of
// check_task_call() [with Function = <the task's type>; Passed = {<the arguments' types>}]",
// which is how the message names them. The caller compiles nothing else for a failed check.

// The result type the entry points show for a function that is not a task (or, for map, returns
// nothing), so that their signatures stay well-formed (std::vector<void> would not) and the
// check is the first error.
struct not_a_task_function {};

// false, with the types in its name: clang prints the failed condition with them.
template <class...>
constexpr bool always_false = false;

// Whether a function with parameters Params (decayed) can be called with arguments Passed:
// the call compiles as a direct call would (implicit conversions only).
template <class Params, class... Passed>
struct converts_to : std::false_type {};
template <class... P, class... Passed>
  requires(sizeof...(P) == sizeof...(Passed))
struct converts_to<std::tuple<P...>, Passed...>
    : std::bool_constant<(std::is_convertible_v<Passed, P> && ...)> {};
// Whether a worker can call it with the values it decodes (rvalues of the decayed parameters).
template <class Fn, class Params>
struct takes_values : std::false_type {};
template <class Fn, class... P>
struct takes_values<Fn, std::tuple<P...>> : std::is_invocable<Fn, P...> {};

template <class Function, class... Passed>
constexpr bool check_task_call() {
  if constexpr (!plain_function<Function>) {
    static_assert(always_false<Function, Passed...>,
                  "multiproc::Pool: a task must be a plain function or a captureless lambda with concrete "
                  "parameter types (Function, where this error is instantiated, is not): workers are "
                  "forked processes that receive the function's address, so a capturing lambda's or a "
                  "functor's state cannot travel. Pass that state as task arguments, or set it up in "
                  "PoolOptions::initializer.");
    return false;
  } else if constexpr (!takes_values<fn_ptr_t<Function>, params_of_t<Function>>::value) {
    static_assert(always_false<Function, Passed...>,
                  "multiproc::Pool: the task function takes a parameter by non-const reference (Function, "
                  "where this error is instantiated); a worker passes it a value decoded from the message, "
                  "so a change would reach no-one: take the parameter by value or by const reference.");
    return false;
  } else if constexpr (std::tuple_size_v<params_of_t<Function>> != sizeof...(Passed)) {
    static_assert(always_false<Function, Passed...>,
                  "multiproc::Pool: the task function takes another number of arguments than were passed "
                  "(compare Function's parameters with Passed where this error is instantiated): pass "
                  "exactly one argument per parameter (map and imap pass each item as the only argument; "
                  "starmap passes each item, a tuple, as the arguments).");
    return false;
  } else if constexpr (!converts_to<params_of_t<Function>, Passed...>::value) {
    static_assert(always_false<Function, Passed...>,
                  "multiproc::Pool: an argument does not convert to the task function's parameter at its "
                  "position (compare Function's parameters with Passed where this error is instantiated): "
                  "pass a value of each parameter's type.");
    return false;
  } else {
    return true;
  }
}

// apply: f(a...).
template <class F, class... A>
constexpr bool check_apply() {
  return check_task_call<F, A...>();
}

template <class Range>
using item_t = std::decay_t<decltype(*std::begin(std::declval<const Range&>()))>;

// map, imap and starmap collect f's results: f must return one.
template <class Function>
constexpr bool check_returns_value() {
  static_assert(!std::is_void_v<result_of_t<Function>>,
                "multiproc::Pool: map, imap and starmap collect the task function's results, so it must "
                "return a value (Function, where this error is instantiated, returns void): use "
                "apply_async for a function without a result.");
  return !std::is_void_v<result_of_t<Function>>;
}

// map/imap: f(item) for each item of the range.
template <class F, class Range>
constexpr bool check_map() {
  if constexpr (check_task_call<F, item_t<Range>>()) {
    return check_returns_value<F>();
  } else {
    return false;
  }
}

// starmap: f(item...) for each item, a tuple (pair, std::array) of arguments.
template <class Tuple>
concept tuple_like = requires { std::tuple_size<Tuple>::value; };
template <class F, class Tuple>
constexpr bool check_star_item() {
  if constexpr (!tuple_like<Tuple>) {
    static_assert(always_false<F, Tuple>,
                  "multiproc::Pool: starmap's items must be tuples (std::tuple, std::pair or std::array) "
                  "holding the task function's arguments (Tuple, where this error is instantiated, is not "
                  "one): use map for one argument per item.");
    return false;
  } else {
    constexpr bool callable = []<std::size_t... I>(std::index_sequence<I...>) {
      return check_task_call<F, std::tuple_element_t<I, Tuple>...>();
    }(std::make_index_sequence<std::tuple_size_v<Tuple>>{});
    if constexpr (callable) {
      return check_returns_value<F>();
    } else {
      return false;
    }
  }
}
template <class F, class Range>
constexpr bool check_starmap() {
  return check_star_item<F, item_t<Range>>();
}

// How a call's arguments enter a chunk: as the function's parameter types, so that what travels
// is exactly what the worker decodes. An implicit conversion (a const char* for a std::string,
// an int for a double) happens here, as it would in a direct call.
// apply and starmap: the item is a tuple (pair, std::array) of the arguments.
template <class F>
struct pack_arguments {
  template <class Tuple>
  void operator()(msgpack::packer<Buffer>& pk, const Tuple& values) const {
    using params = params_of_t<F>;
    if constexpr (std::is_same_v<Tuple, params>) {
      pk.pack(values);
    } else {
      pk.pack(std::apply([](const auto&... v) { return params(v...); }, values));
    }
  }
};
// map and imap: the item is the one argument.
template <class F>
struct pack_argument {
  // What items travel as (pack_items writes numbers itself, without a packer).
  using param = std::tuple_element_t<0, params_of_t<F>>;
  template <class Item>
  void operator()(msgpack::packer<Buffer>& pk, const Item& item) const {
    if constexpr (std::is_same_v<Item, param>) {
      pk.pack(item);
    } else {
      pk.pack(param(item));
    }
  }
};

// ---- worker side ---------------------------------------------------------------------------

// Runs fn over every item of a chunk (the bytes of a MessagePack array) and packs the results,
// in order, as one array into out. Throws what fn throws, Error when the bytes are not
// MessagePack, TypeError when an item does not decode.
using chunk_runner = void (*)(erased_fn fn, std::string_view chunk, Buffer& out);

void check_chunk(const msgpack::object& chunk);

template <class R, class Call>
void pack_call(msgpack::packer<Buffer>& pk, Call&& call) {
  if constexpr (std::is_void_v<R>) {
    call();
    pk.pack_nil();
  } else {
    pk.pack(call());
  }
}

// map/imap: every item is the function's single argument; numbers skip the object tree.
template <class Fn>
void run_each(erased_fn fn, std::string_view bytes, Buffer& out) {
  using traits = fn_traits<Fn>;
  using arg = std::tuple_element_t<0, typename traits::args>;
  auto f = reinterpret_cast<Fn>(fn);
  msgpack::packer<Buffer> pk(out);
  if constexpr (plain_number<arg>) {
    // A first pass checks every item, so that a bad one fails the chunk before f runs twice.
    if (auto n = number_array<arg>::visit(bytes, bytes.size(), [](arg) {})) {
      pk.pack_array(static_cast<std::uint32_t>(*n));
      if constexpr (plain_number<typename traits::result>) {
        number_writer results(out.data, *n);
        number_array<arg>::visit(bytes, *n, [&](arg x) { results.put(f(x)); });
      } else {
        number_array<arg>::visit(bytes, *n, [&](arg x) { pack_call<typename traits::result>(pk, [&] { return f(x); }); });
      }
      return;
    }
  }
  auto handle = unpack_untrusted(bytes);
  const auto& chunk = handle.get();
  check_chunk(chunk);
  pk.pack_array(chunk.via.array.size);
  for (const auto& item : std::span(chunk.via.array.ptr, chunk.via.array.size))
    pack_call<typename traits::result>(pk, [&] { return f(convert<arg>(item)); });
}

// apply/starmap: every item is a tuple of the function's arguments.
template <class Fn>
void run_star(erased_fn fn, std::string_view bytes, Buffer& out) {
  using traits = fn_traits<Fn>;
  auto handle = unpack_untrusted(bytes);
  const auto& chunk = handle.get();
  check_chunk(chunk);
  auto f = reinterpret_cast<Fn>(fn);
  msgpack::packer<Buffer> pk(out);
  pk.pack_array(chunk.via.array.size);
  for (const auto& item : std::span(chunk.via.array.ptr, chunk.via.array.size)) {
    auto args = convert<typename traits::args>(item);
    pack_call<typename traits::result>(pk, [&] { return std::apply(f, std::move(args)); });
  }
}

// ---- parent side: waiting ------------------------------------------------------------------

// A mutex/condition pair whose waiters first spin on an event counter: a result usually lands
// within microseconds, and a sleeping waiter costs a cross-CPU wake-up (~35 µs here).
class waitable {
public:
  // Waits (lk holds m_) until pred() or the deadline; returns pred().
  template <class Pred>
  bool wait_until(std::unique_lock<std::mutex>& lk, Deadline deadline, Pred pred) {
    if (pred()) return true;
    spin(lk, deadline);
    while (!pred()) {
      if (!deadline) {
        cv_.wait(lk);
      } else if (cv_.wait_until(lk, *deadline) == std::cv_status::timeout) {
        return pred();
      }
    }
    return true;
  }

protected:
  // With m_ held: wake every waiter.
  void notify_locked() {
    events_.fetch_add(1, std::memory_order_release);
    cv_.notify_all();
  }
  mutable std::mutex m_;

private:
  void spin(std::unique_lock<std::mutex>& lk, Deadline deadline) {
    auto end = Clock::now() + spin_duration();
    if (deadline && *deadline < end) end = *deadline;
    auto seen = events_.load(std::memory_order_acquire);
    lk.unlock();
    while (Clock::now() < end) {
      if (events_.load(std::memory_order_acquire) != seen) break;
      progress_hook();
      std::this_thread::yield();
    }
    lk.lock();
  }
  // Lets a waiting caller read results itself instead of waiting for the result thread.
  virtual void progress_hook() {}

  std::condition_variable cv_;
  std::atomic<std::uint64_t> events_{0};
};

// ---- parent side: jobs ---------------------------------------------------------------------

class pool_core;
// Reads whatever results have arrived (the caller's spin while it waits). Never blocks.
void poll_results(pool_core&);

// The results of one call (apply, map, imap...) split into chunks. The pool's lock guards
// chunks_left; deliver/fail run under it; callbacks run on the result thread without it.
class job : public waitable, public std::enable_shared_from_this<job> {
public:
  virtual ~job() = default;
  // Items [first, first + n) of the call produced `results` (a MessagePack array of n values).
  virtual void deliver(std::size_t first, const msgpack::object& results) = 0;
  // As deliver, from the array's bytes as a worker sent them (Error when they are not MessagePack).
  virtual void deliver_packed(std::size_t first, std::string_view results) {
    auto handle = unpack_untrusted(results);
    deliver(first, handle.get());
  }
  virtual void fail(std::size_t first, std::size_t n, std::exception_ptr error) = 0;
  // Marks the call finished (after its callbacks ran, if any) and wakes waiters.
  virtual void complete() {}
  virtual bool has_callbacks() const { return false; }
  // Runs the user's callback or error_callback; on the result thread.
  virtual void run_callbacks() {}

  std::size_t chunks_left = 0;
  std::weak_ptr<pool_core> pool;  // for progress_hook

private:
  void progress_hook() override {
    if (auto p = pool.lock()) poll_results(*p);
  }
};

// Values as stored in the parent: void results become monostate.
template <class R>
using stored_t = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

template <class T>
void check_results(const msgpack::object& results, std::size_t n) {
  if (results.type != msgpack::type::ARRAY || results.via.array.size != n)
    throw TypeError("a pool worker answered with " + msgpack_type_name(results) + " where " +
                    std::to_string(n) + " results of type " + type_name<T>() + " were expected");
}

// AsyncResult's state: one value of type V, or the first error, once every chunk has answered.
template <class V>
class result_job : public job {
public:
  using value_callback = std::function<void(const V&)>;
  using error_callback = std::function<void(std::exception_ptr)>;

  void set_callbacks(value_callback on_value, error_callback on_error) {
    on_value_ = std::move(on_value);
    on_error_ = std::move(on_error);
  }
  void fail(std::size_t, std::size_t, std::exception_ptr error) override {
    std::lock_guard lk(m_);
    if (!error_) error_ = std::move(error);
  }
  void complete() override {
    std::lock_guard lk(m_);
    done_.store(true, std::memory_order_release);
    notify_locked();
  }
  bool has_callbacks() const override { return on_value_ || on_error_; }
  void run_callbacks() override {
    if (error_) {
      if (on_error_) on_error_(error_);
    } else if (on_value_) {
      on_value_(value_);
    }
  }

  bool wait(Deadline deadline) {
    if (done_.load(std::memory_order_acquire)) return true;
    std::unique_lock lk(m_);
    return wait_until(lk, deadline, [&] { return done_.load(std::memory_order_acquire); });
  }
  bool ready() const { return done_.load(std::memory_order_acquire); }
  bool successful() const {
    if (!ready()) throw ValueError("AsyncResult is not ready: wait() for it before asking successful()");
    return !error_;
  }
  // After wait(): the value, or the task's exception rethrown.
  const V& value() const {
    if (error_) std::rethrow_exception(error_);
    return value_;
  }
  // As value(), moving it out: for a caller that holds the only reference to the result.
  V take() {
    if (error_) std::rethrow_exception(error_);
    return std::move(value_);
  }

protected:
  V value_{};

private:
  std::exception_ptr error_;
  std::atomic<bool> done_{false};
  value_callback on_value_;
  error_callback on_error_;
};

// apply/apply_async: one item.
template <class R>
class single_job final : public result_job<stored_t<R>> {
public:
  void deliver(std::size_t, const msgpack::object& results) override {
    check_results<R>(results, 1);
    if constexpr (!std::is_void_v<R>) this->value_ = convert<R>(results.via.array.ptr[0]);
  }
};

// Makes the pages of a large buffer that is about to be written present in one system call,
// not one page fault each (~10 µs apiece on a VM); a no-op for small buffers or old kernels.
void prefault(void* data, std::size_t bytes);

// map/starmap: n items, in order.
template <class R>
class list_job final : public result_job<std::vector<R>> {
public:
  explicit list_job(std::size_t n) {
    this->value_.reserve(n);
    prefault(this->value_.data(), n * sizeof(R));
    this->value_.resize(n);
  }
  void deliver(std::size_t first, const msgpack::object& results) override {
    check_results<R>(results, results.via.array.size);
    auto items = std::span(results.via.array.ptr, results.via.array.size);
    if (first + items.size() > this->value_.size()) throw Error("a pool worker answered with too many results");
    for (std::size_t i = 0; i < items.size(); ++i) this->value_[first + i] = convert<R>(items[i]);
  }
  // Numbers go straight from the bytes into the vector.
  void deliver_packed(std::size_t first, std::string_view results) override {
    if constexpr (plain_number<R>) {
      // Where it declines, the generic path rewrites the items or fails the chunk.
      auto* out = this->value_.data() + first;
      auto room = first <= this->value_.size() ? this->value_.size() - first : 0;
      if (number_array<R>::visit(results, room, [&](R x) { *out++ = x; })) return;
    }
    result_job<std::vector<R>>::deliver_packed(first, results);
  }
};

// imap/imap_unordered: items become visible one chunk at a time.
template <class R>
class stream_job final : public job {
public:
  stream_job(std::size_t n, bool ordered) : n_(n), ordered_(ordered) {}

  void deliver(std::size_t first, const msgpack::object& results) override {
    check_results<R>(results, results.via.array.size);
    std::vector<entry> values;
    for (const auto& item : std::span(results.via.array.ptr, results.via.array.size))
      values.emplace_back(convert<R>(item));
    store(first, std::move(values));
  }
  void fail(std::size_t first, std::size_t n, std::exception_ptr error) override {
    store(first, std::vector<entry>(n, entry(error)));
  }

  // The next item: nullopt after the last one, TimeoutError past the deadline.
  std::optional<R> next(Deadline deadline) {
    std::unique_lock lk(m_);
    if (taken_ == n_) return std::nullopt;
    // Ordered items are keyed by position, unordered ones by arrival: either way the next is taken_.
    if (!wait_until(lk, deadline, [&] { return items_.count(taken_) > 0; }))
      throw TimeoutError("no result from the pool within the timeout");
    auto node = items_.extract(taken_);
    ++taken_;
    if (auto* error = std::get_if<std::exception_ptr>(&node.mapped())) std::rethrow_exception(*error);
    return std::move(std::get<R>(node.mapped()));
  }

private:
  using entry = std::variant<R, std::exception_ptr>;
  void store(std::size_t first, std::vector<entry> values) {
    std::lock_guard lk(m_);
    for (std::size_t i = 0; i < values.size(); ++i)
      items_.emplace(ordered_ ? first + i : arrived_++, std::move(values[i]));
    notify_locked();
  }

  std::size_t n_;
  bool ordered_;
  std::size_t taken_ = 0;    // items handed to the caller
  std::size_t arrived_ = 0;  // imap_unordered: items in arrival order
  std::map<std::size_t, entry> items_;
};

// ---- parent side: submissions --------------------------------------------------------------

// One call's chunks. The caller packs them a segment (one or more chunks, back to back) at a
// time and hands each segment to the pool as soon as it is full, so that workers run the first
// chunks while the rest are packed; once handed over, the pool's lock guards segments and chunks.
struct submission {
  struct chunk {
    std::size_t segment;       // in segments
    std::size_t offset, size;  // bytes of that segment
    std::size_t first, count;  // items of the call
  };
  std::shared_ptr<job> owner;
  chunk_runner runner;
  erased_fn fn;
  std::size_t total = 0;  // chunks of the call, known before the first is packed
  std::vector<std::string> segments;
  std::vector<chunk> chunks;
};

// A segment is handed over once it holds this many bytes: every chunk of a large map goes out as
// soon as it is packed, while thousands of single-item chunks go out together.
constexpr std::size_t segment_bytes = 16 * 1024;

// CPython's Pool._map_async default: divmod(len, 4 * processes), rounded up.
inline std::size_t default_chunksize(std::size_t n, unsigned processes) {
  std::size_t per = std::size_t{4} * processes;
  return n / per + (n % per ? 1 : 0);
}

// A pack_argument whose items travel as numbers.
template <class PackItem>
concept packs_numbers = requires { typename PackItem::param; } && plain_number<typename PackItem::param>;

// Packs count items from it on, advancing it.
template <class It, class PackItem>
void pack_items(msgpack::packer<Buffer>& pk, Buffer& buf, It& it, std::size_t count, PackItem pack_item) {
  if constexpr (packs_numbers<PackItem>) {
    using param = typename PackItem::param;
    number_writer items(buf.data, count);
    for (std::size_t i = 0; i < count; ++i, ++it) items.put(static_cast<param>(*it));
  } else {
    for (std::size_t i = 0; i < count; ++i, ++it) pack_item(pk, *it);
  }
}

// Packs items [0, n) into chunks of `chunksize`; pack_item(packer, item) packs one item, and
// handover(bytes, chunks) receives the packed segments in order (the last one may be empty).
template <class Range, class PackItem, class Handover>
void pack_chunks(submission& sub, const Range& items, std::size_t chunksize, PackItem pack_item, Handover handover) {
  Buffer buf;
  msgpack::packer<Buffer> pk(buf);
  std::vector<submission::chunk> packed;
  std::size_t index = 0;
  auto it = std::begin(items);
  auto end = std::end(items);
  std::size_t n = static_cast<std::size_t>(std::distance(it, end));
  sub.total = n / chunksize + (n % chunksize ? 1 : 0);
  sub.chunks.reserve(sub.total);
  do {
    std::size_t count = std::min(chunksize, n - index);
    if (count > 0) {
      std::size_t offset = buf.data.size();
      pk.pack_array(static_cast<uint32_t>(count));
      pack_items(pk, buf, it, count, pack_item);
      packed.push_back({0, offset, buf.data.size() - offset, index, count});
      index += count;
    }
    if (index == n || buf.data.size() >= segment_bytes) {
      handover(std::move(buf.data), std::move(packed));
      buf.data.clear();
      packed.clear();
    }
  } while (index < n);
}

} // namespace multiproc::detail
