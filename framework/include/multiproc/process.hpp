// mp::Process — Python's multiprocessing.Process: a target run in a child OS process.
//
// start() starts the child by the process's start method (ProcessOptions::start_method, else
// get_start_method()): fork (the default) after flushing the C and C++ standard streams so that
// output buffered before start() is printed once; spawn (a fresh run of this program, whose
// main() calls mp::init first) or forkserver (a fork of a small single-threaded server), which are
// safe in a multi-threaded program. Under spawn and forkserver the target must be a function
// pointer or a captureless lambda and each argument MessagePack-packable or a library handle:
// anything else is a ValueError from start(). The child runs run() (by default
// target(args...)), then flushes its own streams and queues, joins its own non-daemonic
// children, terminates its daemonic ones and leaves with _exit: it never returns into the
// caller's stack, so the parent's atexit handlers and static destructors never run in it (not
// even when the child calls std::exit(n), which ends it as SystemExit{n} does).
// Exit codes are Python's: 0, N for SystemExit{N}, 1 when run() threw (stderr gets
// "Process <name>:" and the exception), -SIG when killed by signal SIG.
// Every child is reaped through its pidfd (also its sentinel): join(), is_alive(), exitcode(),
// the next start(), active_children() and the exit function all reap, so no zombie outlives
// them. At normal exit the main process terminates its daemonic children (SIGKILL after one
// second) and joins the others, as Python does.
// The child dies with its parent through PR_SET_PDEATHSIG (SIGKILL). Linux sends that signal
// when the *thread* that called start() ends, not only the process: a child started from a
// thread that ends first is killed (exit code -9). Start processes from the main thread or
// from a thread that outlives them.
// Only the process that created a Process object may start, join or signal it; in a
// forked child, is_alive() of the child's own object is true and pid() is its own pid.
// Thread safety: join(), is_alive(), exitcode(), terminate() and kill() may be called from
// several threads at once; the setters and close() may not race with other calls. Handle
// arguments (pipes, queues, shared memory) refer in the child to the same objects.
// Destructor: never kills a running child; a started, unjoined child is reaped later.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <concepts>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "multiproc/detail/reduction.hpp"

namespace multiproc {

enum class StartMethod { fork, spawn, forkserver };

// Default member initializers let ProcessOptions{.daemon = true} compile without
// -Wmissing-field-initializers warnings. Empty name: "Process-N"; no daemon: the creator's flag.
// No start_method: get_start_method() at start().
struct ProcessOptions {
  std::string name{};
  std::optional<bool> daemon{};
  std::optional<StartMethod> start_method{};
};
struct ProcessInfo {
  std::string name{};
  pid_t pid = 0;
  bool daemon = false;
};

class Process;

namespace detail {
struct ProcessState;
struct process_subclass_access;

// One static_assert, the compiler's first error for a target that cannot take the arguments;
// the line before it, "In instantiation of check_target() [with Target = ...; Passed = {...}]",
// names the target (its parameters, for a function or lambda) and the arguments' types.
template <class Target, class... Passed>
constexpr bool check_target() {
  static_assert(std::is_invocable_v<Target&, Passed&...>,
                "multiproc::Process: the target cannot be called with the arguments given (compare "
                "Target's parameters with Passed where this error is instantiated): pass one argument per "
                "parameter, each convertible to the parameter's type.");
  return std::is_invocable_v<Target&, Passed&...>;
}
} // namespace detail

class Process {
public:
  // For subclasses that override run().
  Process();
  // target(args...) must compile, or the call does not (see check_target).
  template <class F, class... Args>
    requires(!std::same_as<std::decay_t<F>, ProcessOptions> && !std::derived_from<std::decay_t<F>, Process>)
  explicit Process(F target, Args... args) : Process(ProcessOptions{}, std::move(target), std::move(args)...) {}
  template <class F, class... Args>
  Process(ProcessOptions options, F target, Args... args) : Process(std::move(options)) {
    if constexpr (detail::check_target<F, Args...>()) {
      auto call = std::make_tuple(std::move(args)...);
      if constexpr (detail::plain_function<F>)
        spawn_target_ = [fn = +target, call] { return detail::make_spawn_target(fn, call); };
      else
        spawn_target_ = []() -> detail::SpawnTarget { detail::throw_untransferable_target(detail::type_name<F>()); };
      target_ = [f = std::move(target), a = std::move(call)]() mutable { std::apply(f, a); };
    }
  }
  explicit Process(ProcessOptions options);
  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  virtual ~Process();

  // The child's body: calls target(args...). Override it in a subclass instead of a target.
  virtual void run();

  // Starts the child. ProcessError if started twice, from a daemonic process, or by a process
  // other than the one that created the object, or (spawn) when the child's main() does not call
  // mp::init within 10 s; ValueError (spawn, forkserver) when the target or an argument cannot
  // cross; OSError if fork or spawn fails.
  void start();
  // Blocks until the child ended and reaps it. ProcessError if never started or not our child.
  void join();
  // Waits at most timeout (zero or negative: just checks); true once the child has ended.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(std::chrono::duration<double>(timeout));
  }
  bool is_alive() const;
  void terminate();  // SIGTERM; no effect before start() or once the child has ended
  void kill();       // SIGKILL; no effect before start() or once the child has ended
  // Frees the pidfd; ValueError while the child still runs; closing twice is harmless. Then
  // every method except name(), daemon() and their setters throws ValueError, as in Python.
  void close();

  std::optional<int> exitcode() const;
  std::optional<pid_t> pid() const;
  const std::string& name() const;
  void set_name(std::string);
  bool daemon() const;
  void set_daemon(bool);  // ProcessError after start()
  // An fd that becomes readable when the process ends (its pidfd); use it with
  // connection::wait or poll. It stays valid until close(). ValueError before start().
  int sentinel() const;

  // Every method of a moved-from Process throws ValueError (close() does nothing).

protected:
  // A subclass as a spawn or forkserver child; MULTIPROC_SPAWNABLE overrides it.
  virtual std::optional<detail::SpawnTarget> subclass_target() const { return std::nullopt; }

private:
  friend struct detail::process_subclass_access;
  int bootstrap();  // the child's first frame
  void become_current();  // in a spawn or forkserver child: this object is the process running
  bool join_for(std::chrono::duration<double> timeout);
  bool join_until(std::optional<std::chrono::steady_clock::time_point> deadline);
  detail::SpawnTarget spawn_target() const;
  std::function<void()> target_;
  std::function<detail::SpawnTarget()> spawn_target_;  // the same call, for spawn and forkserver
  std::shared_ptr<detail::ProcessState> state_;
};

namespace detail {

// What MULTIPROC_SPAWNABLE's members are reached through.
struct process_subclass_access {
  template <class T>
  static auto fields(T& process) {
    return process.multiproc_fields_();
  }
  static void become_current(Process& process) { process.become_current(); }
};

// ValueError unless the object is exactly the class that declared MULTIPROC_SPAWNABLE (a class
// derived from it must say it again, or its own members would not cross).
void check_spawnable_class(const std::type_info& object, const std::type_info& declared);

template <class Fields, std::size_t... I>
constexpr bool fields_transferable(std::index_sequence<I...>) {
  return (transferable<std::remove_cvref_t<std::tuple_element_t<I, Fields>>> && ...);
}

// The child's side: a default-constructed T whose listed members take the parent's values, run
// as the current process.
template <class T>
void run_process_subclass(erased_fn, const msgpack::object& args, ReceivedFds& fds) {
  T process;
  auto fields = process_subclass_access::fields(process);
  using Fields = decltype(fields);
  check_argument_count(args, std::tuple_size_v<Fields>);
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    // A fold over the comma operator rebuilds the members in order, as their descriptors were added.
    ((std::get<I>(fields) =
          rebuild_value<std::remove_cvref_t<std::tuple_element_t<I, Fields>>>(args.via.array.ptr[I], fds)),
     ...);
  }(std::make_index_sequence<std::tuple_size_v<Fields>>{});
  process_subclass_access::become_current(process);
  static_cast<Process&>(process).run();
}

template <class T>
SpawnTarget subclass_spawn_target(const T& self) {
  static_assert(std::is_default_constructible_v<T>,
                "MULTIPROC_SPAWNABLE: a spawn or forkserver child default-constructs the class, then sets the "
                "members listed; give it a default constructor (it may be private if the class befriends "
                "multiproc::detail::process_subclass_access)");
  check_spawnable_class(typeid(self), typeid(T));
  auto fields = process_subclass_access::fields(const_cast<T&>(self));
  using Fields = decltype(fields);
  static_assert(fields_transferable<Fields>(std::make_index_sequence<std::tuple_size_v<Fields>>{}),
                "MULTIPROC_SPAWNABLE: every member listed must be MessagePack-packable or a library handle");
  SpawnTarget out{&run_process_subclass<T>, nullptr, {}, {}};
  reduce_arguments(out, fields);
  return out;
}

} // namespace detail

// In the body of a Process subclass that overrides run(): lets it start under spawn and forkserver
// too. The child default-constructs the class, sets the members listed (each MessagePack-packable
// or a library handle: a Queue, a Connection, a proxy...) to their values in the parent at
// start(), and calls run(); name() and daemon() are the parent's, as under fork. List every member
// run() reads; a member left out has its default value in the child. Under fork it changes nothing.
//   class Worker : public mp::Process {
//   public:
//     Worker() = default;
//     Worker(mp::Queue<int> q, int n) : q_(std::move(q)), n_(n) {}
//     void run() override { q_.put(n_); }
//   private:
//     mp::Queue<int> q_;
//     int n_ = 0;
//     MULTIPROC_SPAWNABLE(Worker, q_, n_)
//   };
#define MULTIPROC_SPAWNABLE(Class, ...)                                                             \
  friend struct ::multiproc::detail::process_subclass_access;                                      \
  auto multiproc_fields_() { return std::tie(__VA_ARGS__); }                                       \
  std::optional<::multiproc::detail::SpawnTarget> subclass_target() const override {              \
    return ::multiproc::detail::subclass_spawn_target<Class>(*this);                                \
  }

ProcessInfo current_process();              // "MainProcess" in the main process
std::optional<ProcessInfo> parent_process(); // nullopt in the main process
std::vector<ProcessInfo> active_children();  // live children; reaps finished ones
unsigned cpu_count();
// The first line of main() in a program that uses spawn or forkserver: in a spawned child it runs
// the child's work and never returns. Also registers the exit function.
void init(int argc, char** argv);
void freeze_support();                       // for parity with Python; does nothing on Linux
// The start method of every later start() that does not name one (default: fork, or the
// environment variable MULTIPROC_START_METHOD = fork | spawn | forkserver). Thread-safe.
void set_start_method(StartMethod);
StartMethod get_start_method();
std::vector<StartMethod> get_all_start_methods();  // {fork, spawn, forkserver}
// Run once in the fork server before its first fork; a server already running is replaced at the
// next start (its children are not harmed).
void set_forkserver_preload(void (*preload)());

} // namespace multiproc
