// mp::Supervisor's actor: a CAF actor on a thread of its own that starts, watches (through their
// pidfds, as the pool's supervisor does), stops and restarts the children, and a plain struct,
// supervision_strategy, that makes its decisions (which children to stop and start again, in
// which order, and when to give up), inline so that tests use it without the plugin or an actor
// system.
//
// This header is CAF-free: mp::Supervisor (framework/src/supervisor.cpp) holds a
// supervisor_handle that libmultiproc_actors makes (actors/plugin.hpp).
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pool_supervisor.hpp"
#include "multiproc/supervisor.hpp"

namespace multiproc::actors {

// A child as the strategy sees it, in start order.
struct supervised {
  std::string id;
  Restart restart = Restart::permanent;
  bool running = false;
};

// What to do when a child ended: stop `stop` (reverse start order), forget `forget`, then start
// `start` (start order); or, when give_up, stop every child and end.
struct exit_plan {
  bool give_up = false;
  std::vector<std::string> stop;
  std::vector<std::string> forget;
  std::vector<std::string> start;
};

// OTP's decisions. The ended child comes back when its restart type says so (permanent always,
// transient after an exit code other than 0, temporary never); only then are its siblings
// concerned: none for one_for_one, all for one_for_all, those started after it for rest_for_one.
// Siblings concerned that run are stopped; temporary ones are forgotten instead of started again
// (as OTP does); the others start again, even one that terminate_child had left down (as OTP).
// Each exit that restarts anything counts once against the intensity.
class supervision_strategy {
public:
  supervision_strategy(Strategy strategy, restart_intensity intensity) : strategy_(strategy), intensity_(intensity) {}

  static bool comes_back(Restart restart, int exitcode) {
    return restart == Restart::permanent || (restart == Restart::transient && exitcode != 0);
  }

  // `children` as they are now (the ended one no longer running), in start order.
  exit_plan child_ended(const std::vector<supervised>& children, std::string_view ended, int exitcode,
                        restart_intensity::clock::time_point now) {
    exit_plan plan;
    auto at = std::find_if(children.begin(), children.end(), [&](const supervised& c) { return c.id == ended; });
    if (at == children.end()) return plan;
    if (!comes_back(at->restart, exitcode)) {
      if (at->restart == Restart::temporary) plan.forget.push_back(at->id);
      return plan;
    }
    if (!intensity_.record(now)) {
      plan.give_up = true;
      for (auto it = children.rbegin(); it != children.rend(); ++it)
        if (it->running) plan.stop.push_back(it->id);
      return plan;
    }
    auto first = strategy_ == Strategy::one_for_all ? children.begin() : at;
    auto last = strategy_ == Strategy::one_for_one ? at + 1 : children.end();
    for (auto it = std::make_reverse_iterator(last); it != std::make_reverse_iterator(first); ++it)
      if (it->running) plan.stop.push_back(it->id);
    for (auto it = first; it != last; ++it) {
      if (it != at && it->restart == Restart::temporary)
        plan.forget.push_back(it->id);
      else
        plan.start.push_back(it->id);
    }
    return plan;
  }

private:
  Strategy strategy_;
  restart_intensity intensity_;
};

// The supervisor actor, seen from mp::Supervisor: each call runs on the actor's thread and
// returns once done (its errors thrown here). Destroying it stops it.
class supervisor_handle {
public:
  supervisor_handle() = default;
  virtual ~supervisor_handle() = default;
  supervisor_handle(const supervisor_handle&) = delete;
  supervisor_handle& operator=(const supervisor_handle&) = delete;

  virtual ActorRef start_child(ChildSpec spec) = 0;
  virtual ActorRef child(std::string_view id) = 0;
  virtual void terminate_child(std::string_view id) = 0;
  virtual ActorRef restart_child(std::string_view id) = 0;
  virtual void delete_child(std::string_view id) = 0;
  virtual std::vector<ChildInfo> which_children() = 0;
  virtual void stop() = 0;
  virtual bool broken() = 0;
  virtual bool join_for(std::chrono::nanoseconds timeout) = 0;
};

// Starts the supervisor actor and its children (in order). gave_up runs on the actor's thread
// once it gave up and every child has ended (a child supervisor's process ends there).
std::unique_ptr<supervisor_handle> make_supervisor(SupervisorOptions options, std::vector<ChildSpec> children,
                                                   std::function<void()> gave_up);

} // namespace multiproc::actors
