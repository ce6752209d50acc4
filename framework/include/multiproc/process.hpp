// mp::Process — Python's multiprocessing.Process: a target run in a child OS process.
//
// start() forks (start method fork). The child flushes nothing it inherited, runs run() (by
// default target(args...)), flushes its own streams and queues, joins its own non-daemonic
// children and leaves with _exit: it never returns into the caller's stack, so the parent's
// atexit handlers and static destructors never run twice. The child dies with its parent
// (PR_SET_PDEATHSIG). Exit codes are Python's: 0, N for SystemExit{N}, 1 when run() threw (the
// error is printed to stderr as "Process <name>:"), -SIG when killed by a signal.
// Every child is reaped through its pidfd (also its sentinel): no zombies. At normal exit the
// main process joins its non-daemonic children and terminates its daemonic ones.
// A Process object is not safe to share between threads without locking; copies of its handle
// arguments in the child refer to the same pipes, queues and shared memory.
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
#include <utility>
#include <vector>

namespace multiproc {

struct ProcessOptions {
  std::string name;
  std::optional<bool> daemon;
};
struct ProcessInfo {
  std::string name;
  pid_t pid;
  bool daemon;
};

namespace detail {
struct ProcessState;
}

class Process {
public:
  // For subclasses that override run().
  Process();
  template <class F, class... Args>
    requires(!std::same_as<std::decay_t<F>, ProcessOptions> && std::invocable<F&, Args&...>)
  explicit Process(F target, Args... args) : Process(ProcessOptions{}, std::move(target), std::move(args)...) {}
  template <class F, class... Args>
    requires std::invocable<F&, Args&...>
  Process(ProcessOptions options, F target, Args... args) : Process(std::move(options)) {
    target_ = [f = std::move(target), a = std::make_tuple(std::move(args)...)]() mutable {
      std::apply(f, a);
    };
  }
  explicit Process(ProcessOptions options);
  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  virtual ~Process();

  // The child's body: calls target(args...). Override it in a subclass instead of a target.
  virtual void run();

  // Forks the child. ProcessError if started twice or from a daemonic process; ValueError if closed.
  void start();
  // Waits for the child to end. ProcessError if never started. Thread-safe.
  void join();
  // Waits at most timeout (zero: just checks); true when the process has ended.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }
  bool is_alive() const;
  void terminate();  // SIGTERM; no effect once the child has ended
  void kill();       // SIGKILL; no effect once the child has ended
  // Frees the pidfd; ValueError while the child still runs. Most methods then throw ValueError.
  void close();

  std::optional<int> exitcode() const;
  std::optional<pid_t> pid() const;
  const std::string& name() const;
  void set_name(std::string);
  bool daemon() const;
  void set_daemon(bool);  // ProcessError after start()
  // An fd that becomes readable when the process ends (its pidfd). ValueError before start().
  int sentinel() const;

private:
  bool join_for(std::chrono::nanoseconds timeout);
  std::function<void()> target_;
  std::shared_ptr<detail::ProcessState> state_;
};

ProcessInfo current_process();              // "MainProcess" in the main process
std::optional<ProcessInfo> parent_process(); // nullopt in the main process
std::vector<ProcessInfo> active_children();  // live children; reaps finished ones
unsigned cpu_count();
void init(int argc, char** argv);            // first line of main(); needed by spawn/forkserver
void freeze_support();                       // for parity with Python; does nothing on Linux
enum class StartMethod { fork, spawn, forkserver };
// Only fork is implemented so far: spawn and forkserver throw ValueError ("not supported yet").
void set_start_method(StartMethod);
StartMethod get_start_method();

} // namespace multiproc
