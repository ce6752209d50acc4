#include "actors/supervisor.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include "actors/runtime.hpp"
#include "framework/src/actor_peer.hpp"
#include "framework/src/actor_socket.hpp"
#include "framework/src/launch.hpp"
#include "framework/src/log.hpp"

namespace multiproc::actors {

namespace {

using watch_atom = caf::atom_constant<caf::atom("sv_watch")>;
using ended_atom = caf::atom_constant<caf::atom("sv_ended")>;
using call_atom = caf::atom_constant<caf::atom("sv_call")>;
using stop_atom = caf::atom_constant<caf::atom("sv_stop")>;
using quit_atom = caf::atom_constant<caf::atom("sv_quit")>;
using standby_atom = caf::atom_constant<caf::atom("sv_standby")>;

// How long after an incarnation starts its standby is made: the fork and the standby's own start
// take both CPUs of a small machine for a while, which the new incarnation and its first clients
// need more (a restart's burst is over well within this).
constexpr auto standby_delay = std::chrono::milliseconds(5);

// The watcher: a broker that turns each child's pidfd into an ended_atom for the supervisor,
// as the pool's supervisor does (a pidfd's scribe reports connection_closed_msg once the process
// ended). The supervisor itself runs on a thread of its own, because stopping a child waits for
// its grace, which must not stall the multiplexer every broker of this process shares.
struct watcher_state {
  caf::actor supervisor;
  std::unordered_map<std::int64_t, std::uint64_t> incarnations;  // pidfd scribe -> incarnation
};
using watcher_actor = caf::stateful_actor<watcher_state, caf::io::broker>;

caf::behavior watch_pidfds(watcher_actor* self, caf::actor supervisor) {
  self->state.supervisor = std::move(supervisor);
  return {
      [=](watch_atom, std::uint64_t incarnation, int pidfd) {
        auto handle = self->add_scribe(pidfd);
        self->configure_read(handle, caf::io::receive_policy::at_most(1));
        self->state.incarnations[handle.id()] = incarnation;
      },
      [=](const caf::io::connection_closed_msg& msg) {
        auto it = self->state.incarnations.find(msg.handle.id());
        if (it == self->state.incarnations.end()) return;
        self->send(self->state.supervisor, ended_atom::value, it->second);
        self->state.incarnations.erase(it);
      },
      [=](const caf::io::new_data_msg&) {},  // a pidfd carries no data
      [=](stop_atom) {
        // Quit from a function posted to the multiplexer: see pool_supervisor.cpp (a scribe
        // closed in the round that adopted it never leaves CAF 0.17.6's loop).
        self->backend().post([me = caf::actor_cast<caf::actor>(self)] { caf::anon_send(me, quit_atom::value); });
      },
      [=](quit_atom) { self->quit(); },
  };
}

// How the supervisor's end is seen from other threads: broken(), join().
struct ending {
  std::mutex m;
  std::condition_variable cv;
  bool ended = false;
  bool broken = false;
};

// A named child's name, bound by the supervisor for as long as the child is meant to run, across
// its incarnations: a client that looks the name up while the child restarts waits for the new
// incarnation (its connection waits in the socket's backlog) rather than finding nobody.
class held_name {
public:
  held_name() = default;
  held_name(held_name&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  held_name& operator=(held_name&& other) noexcept {
    if (this != &other) {
      release();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~held_name() { release(); }

  // The name's socket, bound now if it is not held yet (ValueError when another actor holds it);
  // -1 for an unnamed child.
  int take(const std::string& name) {
    if (fd_ < 0 && !name.empty()) {
      fd_ = detail::take_actor_name(name);
      detail::register_internal_fd(fd_);  // no forked child keeps it: each incarnation gets a copy
    }
    return fd_;
  }
  // Unbinds it once no incarnation serves it either: whereis finds nobody.
  void release() {
    if (fd_ < 0) return;
    detail::unregister_internal_fd(fd_);
    ::close(fd_);
    fd_ = -1;
  }

private:
  int fd_ = -1;
};

struct child_entry {
  ChildSpec spec;
  ActorRef actor;               // ActorRef{} while down
  std::uint64_t incarnation = 0;  // the watcher's key for `actor`; 0 while down
  unsigned restarts = 0;
  held_name name{};
  detail::StandbyActor standby{};  // the next incarnation, waiting (SupervisorOptions::standby)

  // Down for good (until restart_child): its name is free, and no standby serves a copy of it.
  void release() {
    standby.close(spec.shutdown);
    name.release();
  }
};

// A call from another thread, run on the supervisor's: its error goes back to the caller.
struct supervisor_state;
struct job {
  std::function<void(supervisor_state&)> work;
  std::exception_ptr error;
};

struct supervisor_state {
  caf::event_based_actor* self = nullptr;
  std::vector<child_entry> children;  // start order
  std::optional<supervision_strategy> strategy;
  caf::actor watcher;
  std::uint64_t last_incarnation = 0;
  std::shared_ptr<ending> end;
  std::function<void()> gave_up;
  bool standby = false;  // SupervisorOptions::standby

  bool ended() {
    std::lock_guard lock(end->m);
    return end->ended;
  }

  std::vector<child_entry>::iterator find(std::string_view id) {
    return std::find_if(children.begin(), children.end(), [&](const child_entry& c) { return c.spec.id == id; });
  }
  child_entry& known(std::string_view id) {
    auto it = find(id);
    if (it == children.end()) throw ValueError("the supervisor has no child '" + std::string(id) + "'");
    return *it;
  }

  // Spawns a new incarnation (from this thread: a child dies with the thread that spawned it)
  // and hands a copy of its pidfd to the watcher. await_init: return once its init has run.
  void start(child_entry& c, bool await_init = true) {
    if (c.standby) c.actor = c.standby.open();  // ActorRef{} when the standby died waiting
    if (!c.actor)
      c.actor = detail::spawn_actor(ActorOptions{.name = c.spec.name}, c.spec.start, c.name.take(c.spec.name));
    c.incarnation = ++last_incarnation;
    int pidfd = ::fcntl(detail::spawned_process(c.actor)->sentinel(), F_DUPFD_CLOEXEC, 0);
    if (pidfd < 0) {
      int err = errno;
      stop(c);
      throw OSError(std::string("cannot watch a supervised child: ") + std::strerror(err), err);
    }
    self->send(watcher, watch_atom::value, c.incarnation, pidfd);
    if (await_init) await_serving(c.actor);
    if (standby && c.spec.restart != Restart::temporary)
      self->delayed_send(self, standby_delay, standby_atom::value, c.incarnation);
  }

  // The next incarnation of the child whose current one is `incarnation`, started now and left
  // waiting. Without one (it could not start), a restart starts the child as usual.
  void prepare_standby(std::uint64_t incarnation) {
    auto it = std::find_if(children.begin(), children.end(),
                           [&](const child_entry& c) { return c.incarnation == incarnation; });
    if (it == children.end() || it->standby) return;  // ended or replaced meanwhile
    auto& c = *it;
    try {
      c.standby = detail::spawn_standby(ActorOptions{.name = c.spec.name}, c.spec.start, c.name.take(c.spec.name));
    } catch (const std::exception& e) {
      detail::log(LogLevel::warning, "supervisor: no standby for child '{}': {}", c.spec.id, e.what());
    }
  }

  // As OTP's start_link: the next child starts once this one's init has run (its loop answers),
  // so that a child may count on those started before it. One that ends meanwhile is left to
  // the watcher's report.
  static void await_serving(const ActorRef& ref) {
    int fd = detail::connect_abstract(ref.address());
    if (fd < 0) return;
    detail::actor_peer peer(fd, ref);
    auto frame = detail::control_frame(detail::actor_frame::whoami, 0, msgpack::type::nil_t());
    try {
      peer.call(frame, detail::deadline_after(std::chrono::seconds(10)));
    } catch (const Error& e) {
      detail::log(LogLevel::warning, "supervisor: child {} did not answer after its start: {}", ref.address(), e.what());
    }
  }

  // Asks, waits its shutdown grace, SIGKILLs; returns once it has ended (and was reaped).
  void stop(child_entry& c) {
    if (!c.actor) return;
    detail::log(LogLevel::info, "supervisor: stopping child '{}' (pid {})", c.spec.id, c.actor.pid());
    c.actor.stop(c.spec.shutdown);
    c.actor = ActorRef{};
    c.incarnation = 0;
  }

  // The supervisor's end: every child stopped and its name unbound.
  void stop_all() {
    for (auto it = children.rbegin(); it != children.rend(); ++it) {
      stop(*it);
      it->release();
    }
  }

  void finish(bool broken) {
    std::lock_guard lock(end->m);
    end->ended = true;
    end->broken = broken;
    end->cv.notify_all();
  }

  std::vector<supervised> as_strategy_sees_them() const {
    std::vector<supervised> out;
    for (auto& c : children) out.push_back({c.spec.id, c.spec.restart, static_cast<bool>(c.actor)});
    return out;
  }

  void forget(std::string_view id) {
    if (auto it = find(id); it != children.end()) {
      it->release();
      children.erase(it);
    }
  }

  // The incarnation the watcher reports ended; stale reports (a child this thread stopped) are
  // dropped.
  void on_ended(std::uint64_t incarnation) {
    auto it = std::find_if(children.begin(), children.end(),
                           [&](const child_entry& c) { return c.incarnation == incarnation; });
    if (it == children.end()) return;
    int exitcode = detail::reap_spawned(it->actor, std::nullopt).value_or(255);
    detail::log(LogLevel::info, "supervisor: child '{}' (pid {}) ended with exit code {}", it->spec.id,
                it->actor.pid(), exitcode);
    it->actor = ActorRef{};
    it->incarnation = 0;
    apply(strategy->child_ended(as_strategy_sees_them(), it->spec.id, exitcode, restart_intensity::clock::now()));
    for (auto& c : children)
      if (!c.actor) c.release();  // down until restart_child: its name is free meanwhile
  }

  void apply(const exit_plan& plan) {
    if (plan.give_up) return give_up();
    for (auto& id : plan.stop) stop(known(id));
    for (auto& id : plan.forget) forget(id);
    for (auto& id : plan.start) {
      auto& c = known(id);
      ++c.restarts;
      try {
        // Each child after the init of those before it, as at the first start; after the last
        // one nothing waits, and asking it whether it serves would only compete with its clients.
        start(c, &id != &plan.start.back());
      } catch (const std::exception& e) {
        // As a crash at once: counted against the intensity, so that a child that can never
        // start again ends in giving up rather than in a loop.
        detail::log(LogLevel::error, "supervisor: cannot restart child '{}': {}", id, e.what());
        return apply(strategy->child_ended(as_strategy_sees_them(), id, 1, restart_intensity::clock::now()));
      }
    }
  }

  void give_up() {
    detail::log(LogLevel::error, "supervisor gave up: more than intensity restarts within period");
    stop_all();
    finish(true);
    if (gave_up) gave_up();
  }
};
using supervisor_actor = caf::stateful_actor<supervisor_state>;

caf::behavior supervise(supervisor_actor* self, SupervisorOptions options, std::shared_ptr<ending> end,
                        std::function<void()> gave_up) {
  auto& st = self->state;
  st.self = self;
  st.strategy.emplace(options.strategy, restart_intensity(options.intensity, options.period));
  st.end = std::move(end);
  st.gave_up = std::move(gave_up);
  st.standby = options.standby;
  st.watcher = self->system().middleman().spawn_broker(watch_pidfds, caf::actor_cast<caf::actor>(self));
  return {
      [=](call_atom, std::uint64_t address) {
        auto* call = reinterpret_cast<job*>(address);
        try {
          call->work(self->state);
        } catch (...) {
          call->error = std::current_exception();
        }
        return true;
      },
      [=](ended_atom, std::uint64_t incarnation) {
        if (!self->state.ended()) self->state.on_ended(incarnation);
      },
      [=](standby_atom, std::uint64_t incarnation) {
        if (!self->state.ended()) self->state.prepare_standby(incarnation);
      },
      [=](quit_atom) {
        self->send(self->state.watcher, stop_atom::value);
        self->quit();
      },
  };
}

class caf_supervisor final : public supervisor_handle {
public:
  caf_supervisor(SupervisorOptions options, std::function<void()> gave_up)
      : actor_(sys_->spawn<caf::detached>(supervise, options, end_, std::move(gave_up))) {
    release_thread_logger();
  }

  ~caf_supervisor() override {
    try {
      stop();
    } catch (const std::exception& e) {
      detail::log(LogLevel::error, "supervisor: stopping at destruction failed: {}", e.what());
    }
    UserThreadCall call;
    caf::scoped_actor self{*sys_};
    self->send(actor_, quit_atom::value);
    self->wait_for(actor_);
    // The watcher may still be quitting: ~actor_system waits for it when this was the last holder.
  }

  void start_all(std::vector<ChildSpec> children) {
    for (std::size_t i = 0; i < children.size(); ++i) {
      if (!children[i].start)
        throw ValueError("supervisor child '" + children[i].id + "' has nothing to start");
      for (std::size_t j = 0; j < i; ++j)
        if (children[j].id == children[i].id) throw ValueError("two supervisor children have the id '" + children[i].id + "'");
    }
    run([&](supervisor_state& st) {
      try {
        for (auto& spec : children) {
          auto& c = st.children.emplace_back(child_entry{std::move(spec), {}, 0, 0, {}, {}});
          st.start(c);
        }
      } catch (...) {
        st.stop_all();
        st.children.clear();
        throw;
      }
    });
  }

  ActorRef start_child(ChildSpec spec) override {
    if (!spec.start) throw ValueError("supervisor child '" + spec.id + "' has nothing to start");
    ActorRef out;
    run([&](supervisor_state& st) {
      if (st.ended()) throw ValueError("start_child on a supervisor that has ended");
      if (st.find(spec.id) != st.children.end()) throw ValueError("the supervisor has a child '" + spec.id + "' already");
      child_entry c{std::move(spec), {}, 0, 0, {}, {}};
      st.start(c);
      out = c.actor;
      st.children.push_back(std::move(c));
    });
    return out;
  }

  ActorRef child(std::string_view id) override {
    ActorRef out;
    run([&](supervisor_state& st) { out = st.known(id).actor; });
    return out;
  }

  void terminate_child(std::string_view id) override {
    run([&](supervisor_state& st) {
      auto& c = st.known(id);
      st.stop(c);
      c.release();
      if (c.spec.restart == Restart::temporary) st.forget(id);
    });
  }

  ActorRef restart_child(std::string_view id) override {
    ActorRef out;
    run([&](supervisor_state& st) {
      if (st.ended()) throw ValueError("restart_child on a supervisor that has ended");
      auto& c = st.known(id);
      if (c.actor) throw ValueError("restart_child: child '" + std::string(id) + "' is running");
      st.start(c);
      out = c.actor;
    });
    return out;
  }

  void delete_child(std::string_view id) override {
    run([&](supervisor_state& st) {
      if (st.known(id).actor) throw ValueError("delete_child: child '" + std::string(id) + "' is running");
      st.forget(id);
    });
  }

  std::vector<ChildInfo> which_children() override {
    std::vector<ChildInfo> out;
    run([&](supervisor_state& st) {
      for (auto& c : st.children) out.push_back({c.spec.id, c.actor, c.restarts, c.spec.is_supervisor});
    });
    return out;
  }

  void stop() override {
    run([&](supervisor_state& st) {
      if (st.ended()) return;
      st.stop_all();
      st.finish(false);
    });
  }

  bool broken() override {
    std::lock_guard lock(end_->m);
    return end_->broken;
  }

  bool join_for(std::chrono::nanoseconds timeout) override {
    std::unique_lock lock(end_->m);
    return end_->cv.wait_for(lock, timeout, [&] { return end_->ended; });
  }

private:
  // Runs work on the supervisor's thread and waits for it: every touch of its state goes there,
  // one at a time, between the watcher's reports.
  void run(std::function<void(supervisor_state&)> work) {
    job call{std::move(work), nullptr};
    UserThreadCall on_user_thread;
    caf::scoped_actor self{*sys_};
    caf::error failed;
    self->request(actor_, caf::infinite, call_atom::value, reinterpret_cast<std::uint64_t>(&call))
        .receive([](bool) {}, [&](caf::error& e) { failed = std::move(e); });
    if (failed) throw ProcessError("the supervisor's actor has ended: " + sys_->render(failed));
    if (call.error) std::rethrow_exception(call.error);
  }

  std::shared_ptr<caf::actor_system> sys_ = acquire_system();  // before actor_: it spawns there
  std::shared_ptr<ending> end_ = std::make_shared<ending>();
  caf::actor actor_;
};

} // namespace

std::unique_ptr<supervisor_handle> make_supervisor(SupervisorOptions options, std::vector<ChildSpec> children,
                                                   std::function<void()> gave_up) {
  auto supervisor = std::make_unique<caf_supervisor>(options, std::move(gave_up));
  supervisor->start_all(std::move(children));
  return supervisor;
}

} // namespace multiproc::actors
