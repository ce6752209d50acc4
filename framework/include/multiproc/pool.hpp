// mp::Pool — Python's multiprocessing.Pool: a supervisor that runs tasks in worker processes
// ("ForkPoolWorker-N"; "SpawnPoolWorker-N", "ForkServerPoolWorker-N" under those start methods,
// PoolOptions::start_method else get_start_method()) and restarts the ones that die.
//
// A task is a function or captureless lambda plus arguments; it crosses to the worker by the
// function's address (valid in a forked worker; a spawn or forkserver worker is told each
// function's identity once, its offset in its ELF object) and MessagePack-packed arguments, converted to the function's parameter types in the caller, and its result or
// exception comes back the same way. A call the function cannot take (another function kind,
// another number of arguments, an argument that does not convert) does not compile: one
// static_assert, the compiler's first error, says what to do (detail/pool_task.hpp).
// A worker that dies mid-task (crash, kill -9, std::abort) is replaced and only the tasks it
// held fail, with WorkerLost (exitcode() is its exit code or -signal); more than max_restarts
// such deaths within restart_window break the pool: every pending and later task fails with
// BrokenPool.
// PoolOptions::task_timeout kills a worker whose task overruns (TimeoutError; not a crash, not
// retried).
// An exception thrown by a task comes back as RemoteError (type_name() is its demangled type).
// Callbacks run in the parent on the pool's one result thread, one at a time, before the
// AsyncResult becomes ready; a callback that throws is reported on stderr and ignored.
// Thread safety: every member may be called from several threads at once. Only the process
// that created a pool may use it (in a forked child, calls throw ValueError). The first workers
// die with the thread that created the pool (PR_SET_PDEATHSIG, as Process documents); create a
// pool on a thread that outlives it.
// Destructor: terminate() — as Python's `with Pool() as p:` block ends.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "multiproc/detail/pool_task.hpp"
#include "multiproc/process.hpp"

namespace multiproc {

struct PoolOptions {
  unsigned processes = 0;                   // 0: cpu_count(), or none when there are nodes
  std::function<void()> initializer;        // run once in every worker, restarted ones too
  std::size_t maxtasksperchild = 0;         // 0: workers live as long as the pool
  unsigned max_restarts = 10;               // supervision: more crashes than this within
  std::chrono::seconds restart_window{60};  //   restart_window breaks the pool (BrokenPool)
  std::optional<StartMethod> start_method{};  // how workers start; nullopt: get_start_method()
  // Workers on other hosts (node.hpp): processes_per_node more workers on each node, beside the
  // `processes` local ones (which may then be 0); only MULTIPROC_EXPORTed functions run there.
  std::vector<std::string> nodes;           // "host:port" of serving nodes
  std::string authkey;                      // the nodes' authkey
  unsigned processes_per_node = 0;          // 0: the node's cpu_count
  unsigned task_retries = 0;                // times a chunk whose worker or node died is re-run
  // 0: none. Else a task running longer is killed with its worker (SIGKILL; on a node, the
  // node's worker), which is replaced; the task fails with TimeoutError and is never re-run.
  // A chunk of n tasks (map's chunksize) may run n * task_timeout, counted from when its worker
  // starts it; on a timeout the whole chunk fails, as when one of its tasks throws.
  std::chrono::milliseconds task_timeout{0};
};

// Python's args=(...) of apply_async, for the overload that takes callbacks.
template <class... A>
struct Args {
  std::tuple<A...> values;
};
template <class... A>
Args<A...> args(A... values) {
  return {{std::move(values)...}};
}

namespace detail {
template <class T>
struct is_args : std::false_type {};
template <class... A>
struct is_args<Args<A...>> : std::true_type {};

// The result type of F where F is valid, not_a_task_function elsewhere, so that a wrong F
// reaches the static_assert in check_task_call instead of a substitution failure.
template <class F>
struct task_result {
  using type = not_a_task_function;
};
template <plain_function F>
struct task_result<F> {
  using type = result_of_t<F>;
};
template <class F>
using task_result_t = typename task_result<F>::type;
// What map, imap and starmap collect: F's result, or not_a_task_function where it returns
// void, so that std::vector<void> does not hide check_returns_value's message.
template <class F>
using item_result_t =
    std::conditional_t<std::is_void_v<task_result_t<F>>, not_a_task_function, task_result_t<F>>;

template <class R>
struct callback {
  using type = std::function<void(const R&)>;
};
template <>
struct callback<void> {
  using type = std::function<void()>;
};
template <class R>
using callback_t = typename callback<R>::type;
} // namespace detail

// The result of an *_async call. Copies share the same result.
template <class R>
class AsyncResult {
public:
  // Waits for the result; rethrows the task's exception (RemoteError, WorkerLost, BrokenPool).
  R get() {
    wait();
    return value();
  }
  // As get(); TimeoutError when the result is not there within timeout.
  template <class Rep, class Period>
  R get(std::chrono::duration<Rep, Period> timeout) {
    if (!wait(timeout)) throw TimeoutError("the pool's result was not ready within the timeout");
    return value();
  }
  void wait() { state_->wait(std::nullopt); }
  // true when the result is ready.
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return state_->wait(detail::deadline_after(timeout));
  }
  bool ready() const { return state_->ready(); }
  // Whether the call succeeded; ValueError while not ready.
  bool successful() const { return state_->successful(); }

private:
  friend class Pool;
  friend class ActorRef;
  using state = detail::result_job<detail::stored_t<R>>;
  explicit AsyncResult(std::shared_ptr<state> s) : state_(std::move(s)) {}
  R value() {
    if constexpr (std::is_void_v<R>) {
      state_->value();
    } else {
      return state_->value();
    }
  }
  // get() for the only holder of the result (map, starmap): the value moves out, not copied.
  R take() {
    wait();
    return state_->take();
  }
  std::shared_ptr<state> state_;
};

// imap/imap_unordered's results: an input range, and Python's next()/next(timeout).
template <class R>
class IMapIterator {
public:
  // The next result; nullopt after the last. Rethrows a task's exception at its position.
  std::optional<R> next() { return state_->next(std::nullopt); }
  // As next(); TimeoutError when nothing arrives within timeout.
  template <class Rep, class Period>
  std::optional<R> next(std::chrono::duration<Rep, Period> timeout) {
    return state_->next(detail::deadline_after(timeout));
  }

  class iterator {
  public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    const R& operator*() const { return *current_; }
    iterator& operator++() {
      current_ = owner_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.current_; }

  private:
    friend class IMapIterator;
    explicit iterator(IMapIterator* owner) : owner_(owner), current_(owner->next()) {}
    IMapIterator* owner_ = nullptr;
    std::optional<R> current_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() const { return {}; }

private:
  friend class Pool;
  explicit IMapIterator(std::shared_ptr<detail::stream_job<R>> s) : state_(std::move(s)) {}
  std::shared_ptr<detail::stream_job<R>> state_;
};

class Pool {
public:
  explicit Pool(unsigned processes = 0);
  explicit Pool(PoolOptions);
  ~Pool();  // terminate()
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  template <class F, class... A>
  detail::task_result_t<F> apply(F f, A... a) {
    return apply_async(f, std::move(a)...).get();
  }

  template <class F, class... A>
    requires(!(detail::is_args<A>::value || ...))
  AsyncResult<detail::task_result_t<F>> apply_async(F f, A... a) {
    return apply_async(f, Args<A...>{{std::move(a)...}}, detail::callback_t<detail::task_result_t<F>>{}, {});
  }

  template <class F, class... A>
  AsyncResult<detail::task_result_t<F>> apply_async(F f, Args<A...> a,
                                                    detail::callback_t<detail::task_result_t<F>> callback,
                                                    std::function<void(std::exception_ptr)> error_callback = {}) {
    using R = detail::task_result_t<F>;
    if constexpr (detail::check_apply<F, A...>()) {
      auto job = std::make_shared<detail::single_job<R>>();
      auto sub = submit_items<detail::run_star<detail::fn_ptr_t<F>>>(f, job, std::span(&a.values, 1), 1,
                                                                    detail::pack_arguments<F>{});
      job->set_callbacks(adapt<R>(std::move(callback)), std::move(error_callback));
      seal(*sub);
      return AsyncResult<R>(std::move(job));
    } else {
      return AsyncResult<R>(nullptr);  // never runs: the call did not compile
    }
  }

  template <class F, class Range>
  std::vector<detail::item_result_t<F>> map(F f, const Range& items, std::size_t chunksize = 0) {
    return map_async(f, items, chunksize).take();
  }

  template <class F, class Range>
  AsyncResult<std::vector<detail::item_result_t<F>>> map_async(
      F f, const Range& items, std::size_t chunksize = 0,
      std::function<void(const std::vector<detail::item_result_t<F>>&)> callback = {},
      std::function<void(std::exception_ptr)> error_callback = {}) {
    return list_async<false, detail::check_map<F, Range>()>(f, items, chunksize, std::move(callback),
                                                            std::move(error_callback));
  }

  template <class F, class Range>
  std::vector<detail::item_result_t<F>> starmap(F f, const Range& tuples, std::size_t chunksize = 0) {
    return starmap_async(f, tuples, chunksize).take();
  }

  template <class F, class Range>
  AsyncResult<std::vector<detail::item_result_t<F>>> starmap_async(
      F f, const Range& tuples, std::size_t chunksize = 0,
      std::function<void(const std::vector<detail::item_result_t<F>>&)> callback = {},
      std::function<void(std::exception_ptr)> error_callback = {}) {
    return list_async<true, detail::check_starmap<F, Range>()>(f, tuples, chunksize, std::move(callback),
                                                               std::move(error_callback));
  }

  template <class F, class Range>
  IMapIterator<detail::item_result_t<F>> imap(F f, const Range& items, std::size_t chunksize = 1) {
    return stream(f, items, chunksize, true);
  }

  template <class F, class Range>
  IMapIterator<detail::item_result_t<F>> imap_unordered(F f, const Range& items, std::size_t chunksize = 1) {
    return stream(f, items, chunksize, false);
  }

  // No more tasks; the workers exit once the submitted ones are done.
  void close();
  // Stops the workers now (SIGTERM, SIGKILL after a short grace); unfinished tasks fail with
  // ProcessError.
  void terminate();
  // Waits for the workers to exit; ValueError unless close() or terminate() came first.
  // Afterwards no process, descriptor or thread of the pool remains.
  void join();
  std::vector<pid_t> worker_pids() const;

private:
  template <class R>
  static auto adapt(detail::callback_t<R> callback) {
    using V = detail::stored_t<R>;
    if constexpr (std::is_void_v<R>) {
      return callback ? std::function<void(const V&)>([cb = std::move(callback)](const V&) { cb(); })
                      : std::function<void(const V&)>();
    } else {
      return callback;
    }
  }

  template <auto Runner, class F>
  std::shared_ptr<detail::submission> make_submission(F f, std::shared_ptr<detail::job> job) {
    auto sub = std::make_shared<detail::submission>();
    sub->owner = std::move(job);
    sub->runner = Runner;
    sub->fn = reinterpret_cast<detail::erased_fn>(+f);
    return sub;
  }

  // Queues the items in chunks of chunksize for Runner to run with f in the workers, each segment
  // as soon as it is packed. The job cannot finish before seal(); when packing throws, the
  // chunks already queued still run, the job ends with them, and no callback runs.
  template <auto Runner, class F, class Range, class PackItem>
  std::shared_ptr<detail::submission> submit_items(F f, std::shared_ptr<detail::job> job, const Range& items,
                                                   std::size_t chunksize, PackItem pack_item) {
    auto sub = make_submission<Runner>(f, std::move(job));
    try {
      detail::pack_chunks(*sub, items, chunksize, pack_item,
                          [&](std::string bytes, std::vector<detail::submission::chunk> chunks) {
                            handover(sub, std::move(bytes), std::move(chunks));
                          });
    } catch (...) {
      abandon(*sub);
      throw;
    }
    return sub;
  }

  template <class Range>
  std::size_t chunk_size(const Range& items, std::size_t chunksize) const {
    if (chunksize) return chunksize;
    auto n = static_cast<std::size_t>(std::distance(std::begin(items), std::end(items)));
    return std::max<std::size_t>(1, detail::default_chunksize(n, processes_));
  }

  // map (Star false: each item is the argument) or starmap (each item is a tuple of arguments).
  // Checked is the check of the call: when false, the call did not compile and nothing else is.
  template <bool Star, bool Checked, class F, class Range>
  AsyncResult<std::vector<detail::item_result_t<F>>> list_async(
      F f, const Range& items, std::size_t chunksize,
      std::function<void(const std::vector<detail::item_result_t<F>>&)> callback,
      std::function<void(std::exception_ptr)> error_callback) {
    using R = detail::item_result_t<F>;
    if constexpr (Checked) {
      auto n = static_cast<std::size_t>(std::distance(std::begin(items), std::end(items)));
      auto job = std::make_shared<detail::list_job<R>>(n);
      std::shared_ptr<detail::submission> sub;
      if constexpr (Star) {
        sub = submit_items<detail::run_star<detail::fn_ptr_t<F>>>(f, job, items, chunk_size(items, chunksize),
                                                                  detail::pack_arguments<F>{});
      } else {
        sub = submit_items<detail::run_each<detail::fn_ptr_t<F>>>(f, job, items, chunk_size(items, chunksize),
                                                                  detail::pack_argument<F>{});
      }
      job->set_callbacks(std::move(callback), std::move(error_callback));
      seal(*sub);
      return AsyncResult<std::vector<R>>(std::move(job));
    } else {
      return AsyncResult<std::vector<R>>(nullptr);  // never runs: the call did not compile
    }
  }

  template <class F, class Range>
  IMapIterator<detail::item_result_t<F>> stream(F f, const Range& items, std::size_t chunksize, bool ordered) {
    using R = detail::item_result_t<F>;
    if constexpr (detail::check_map<F, Range>()) {
      if (chunksize == 0) throw ValueError("chunksize must be at least 1");
      auto n = static_cast<std::size_t>(std::distance(std::begin(items), std::end(items)));
      auto job = std::make_shared<detail::stream_job<R>>(n, ordered);
      seal(*submit_items<detail::run_each<detail::fn_ptr_t<F>>>(f, job, items, chunksize,
                                                                detail::pack_argument<F>{}));
      return IMapIterator<R>(std::move(job));
    } else {
      return IMapIterator<R>(nullptr);  // never runs: the call did not compile
    }
  }

  // Queues a packed segment's chunks (ValueError for a call's first once closed; a broken or
  // terminated pool fails them at once).
  void handover(const std::shared_ptr<detail::submission>&, std::string bytes,
                std::vector<detail::submission::chunk> chunks);
  // Every chunk was handed over: the job may finish.
  void seal(detail::submission&);
  // Packing threw: the chunks not handed over never come.
  void abandon(detail::submission&);

  std::shared_ptr<detail::pool_core> core_;
  unsigned processes_;
};

} // namespace multiproc
