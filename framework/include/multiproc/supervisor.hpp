// mp::Supervisor — Erlang/OTP's supervisors for process-hosted actors (Python's multiprocessing
// has none; the model is OTP's `supervisor` module, with its names and its defaults).
//
// A Supervisor starts its children (actors, or child supervisors) in order and watches them. When
// one ends, the child's restart type says whether it comes back (permanent: always; transient:
// when it ended with an exit code other than 0; temporary: never, and it is forgotten), and the
// strategy says which siblings come back with it (one_for_one: none; one_for_all: all of them;
// rest_for_one: those started after it): the siblings concerned are stopped in reverse start
// order, then everything concerned is started again in start order. More than `intensity`
// restarts within `period` and the supervisor gives up: it stops every child, broken() turns true
// and join() returns.
//
// A child that registered a name (ChildSpec::name) takes it again in each new incarnation, so
// whereis() finds whichever runs now. A child supervisor (supervisor_child) runs in its own
// process; when it gives up it ends with exit code 1 and its parent applies its own strategy to
// it, so trees may be of any depth.
//
// Thread safety: every member may be called from several threads at once. The supervisor's work
// runs on a thread of its own (a CAF actor in libmultiproc_actors); children die with it, as
// actors die with the thread that spawned them. The top-level Supervisor runs in the process
// that creates it.
// Shutdown: stop() and the destructor stop the children in reverse start order, each asked first,
// given its `shutdown` grace, then SIGKILLed; they return once every child has ended.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "multiproc/actor.hpp"

namespace multiproc {

enum class Strategy { one_for_one, one_for_all, rest_for_one };
enum class Restart { permanent, transient, temporary };  // always / after exitcode != 0 / never

struct SupervisorOptions {
  Strategy strategy = Strategy::one_for_one;
  unsigned intensity = 1;                   // OTP's defaults: more than
  std::chrono::milliseconds period{5000};  //   1 restart in 5 s gives up
  // Keep each restartable child's next incarnation started and waiting (before its init), so that
  // a restart costs no process start: one more process per child. Under fork the standby is a
  // copy of this process as it was when the running incarnation started.
  bool standby = false;
};

struct ChildSpec {
  std::string id;
  Restart restart = Restart::permanent;
  std::chrono::milliseconds shutdown{5000};  // the grace stop() gives it before SIGKILL
  // What to start (child() and supervisor_child() fill these in): the Process of each new
  // incarnation, serving its seat, under a start method (nullopt: get_start_method()).
  std::function<Process(std::optional<StartMethod>, detail::ActorSeat)> start{};
  std::string name{};  // non-empty: the name every incarnation holds
  bool is_supervisor = false;
};

// An actor child: each incarnation runs init(ctx, args...) in a new process, as spawn() does,
// under the start method in force when it starts; under spawn and forkserver init is a plain
// function (or a captureless lambda) and args cross as MessagePack or library handles.
template <class F, class... A>
ChildSpec child(std::string id, F init, A... args) {
  static_assert(std::is_invocable_r_v<Behavior, F&, ActorContext&, A&...>,
                "multiproc::child: init must be callable as init(ActorContext&, args...) and return a Behavior");
  ChildSpec spec;
  spec.id = std::move(id);
  spec.start = [init = std::move(init), args = std::make_tuple(std::move(args)...)](
                   std::optional<StartMethod> method, detail::ActorSeat seat) mutable {
    return std::apply([&](auto&... a) { return detail::actor_process(method, std::move(seat), init, a...); }, args);
  };
  return spec;
}

// A child that is itself a supervisor over `children`, in a process of its own (which its
// ActorRef names: stopping it stops its children first).
ChildSpec supervisor_child(std::string id, SupervisorOptions options, std::vector<ChildSpec> children);

struct ChildInfo {
  std::string id;
  ActorRef actor;  // ActorRef{} while down
  unsigned restarts = 0;
  bool is_supervisor = false;
};

namespace actors {
class supervisor_handle;
}

class Supervisor {
public:
  // Starts the children in order. When one cannot start, those already started are stopped
  // (reverse order) and its error is thrown; ValueError for two children with one id or a
  // child with nothing to start. ImportError when libmultiproc_actors cannot be loaded.
  explicit Supervisor(SupervisorOptions options = {}, std::vector<ChildSpec> children = {});
  ~Supervisor();  // stop()
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Adds a child after the others and starts it. ValueError when the id is taken or the
  // supervisor has ended; the start's error (the spec is not kept) when it cannot start.
  ActorRef start_child(ChildSpec spec);
  // The current incarnation; ActorRef{} while down. ValueError for an unknown id.
  ActorRef child(std::string_view id) const;
  // Stops the child (ask, its shutdown grace, SIGKILL) and keeps it down; a temporary child is
  // forgotten. ValueError for an unknown id.
  void terminate_child(std::string_view id);
  // Starts a child that is down (terminate_child, a transient child that ended well). ValueError
  // when it runs or is unknown.
  ActorRef restart_child(std::string_view id);
  // Forgets a child that is down. ValueError when it runs or is unknown.
  void delete_child(std::string_view id);
  std::vector<ChildInfo> which_children() const;  // in start order

  // Stops every child in reverse start order (each: ask, wait its shutdown, SIGKILL) and ends the
  // supervisor; returns once they have ended. Later calls do nothing.
  void stop();
  // Whether it gave up: more than intensity restarts within period (then every child is stopped).
  bool broken() const;
  // Waits at most timeout for the supervisor to end (it gave up, or stop() ran); true once it has.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }

private:
  bool join_for(std::chrono::nanoseconds timeout);
  std::unique_ptr<actors::supervisor_handle> impl_;
};

} // namespace multiproc
