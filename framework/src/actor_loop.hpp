// The mailbox loop an actor's process runs (CAF-free, like pool_worker): accept peers of the same
// user, read frames, dispatch each message to the handler of its type, answer requests, fire
// timers, watch monitored and linked actors, and end by telling every peer its exit code.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <poll.h>

#include "actor_peer.hpp"
#include "multiproc/detail/errc.hpp"
#include "multiproc/actor.hpp"
#include "pool_worker.hpp"

namespace multiproc::detail {

class actor_loop {
public:
  // Takes the listening sockets the spawner bound (address, and name or -1).
  actor_loop(ActorRef self, int listen_fd, int name_fd);
  ~actor_loop();
  actor_loop(const actor_loop&) = delete;
  actor_loop& operator=(const actor_loop&) = delete;

  // Runs init, then messages until the actor quits or a handler throws. Returns the exit code;
  // a handler's exception is rethrown once every peer was told (exit code 1).
  int run(std::function<Behavior(ActorContext&)>& init);

  const ActorRef& self() const { return self_; }
  // A message from the actor to itself (a frame payload, without wire header).
  void enqueue_local(std::string payload) { local_.push_back(std::move(payload)); }

  void quit(int exitcode);
  void monitor(const ActorRef& other);
  void link(const ActorRef& other, bool tell_other);
  void trap_exit(bool on) { trap_exit_ = on; }
  void schedule(const ActorRef& to, std::string frame, std::chrono::nanoseconds delay);

private:
  struct client {
    int fd;
    frame_reader in;
    std::string route;  // from routed_from: what refs in answers to this peer pack along
  };
  struct watch {
    std::shared_ptr<actor_peer> peer;
    bool monitor = false;
    bool link = false;
  };
  struct timer {
    ActorRef to;
    std::string frame;
  };

  void serve();
  void wait_for_input();
  void rebuild_poll_set();
  void accept_from(int listen_fd);
  void read_client(std::size_t index);
  void close_client(std::size_t index);
  void handle(std::string_view payload, client* from);
  void dispatch(std::string_view payload, client* from);
  // What refs in answers to `from` pack along ("" for a peer of this host, or no peer).
  static const std::string& route_of(const client* from);
  void answer(client* from, std::string& frame);
  void answer_error(client* from, std::uint64_t request_id, errc code, const std::string& type,
                    const std::string& message);
  void fire_due_timers();
  void check_watches();
  void watched_ended(const ActorRef& ref, const watch& w, int exitcode);
  std::shared_ptr<actor_peer> watch_peer(const ActorRef& other, watch kind);
  void deliver_local(const std::string& frame);
  void end(int exitcode);

  ActorRef self_;
  int listen_fd_;
  int name_fd_;
  std::vector<handler_entry> handlers_;
  std::unordered_map<std::uint64_t, std::size_t> by_type_;
  std::vector<std::unique_ptr<client>> clients_;
  std::map<std::string, watch> watches_;  // by address
  std::multimap<Clock::time_point, timer> timers_;
  std::deque<std::string> local_;
  std::vector<pollfd> poll_set_;
  bool poll_set_dirty_ = true;
  bool trap_exit_ = false;
  std::optional<int> quit_;
  Buffer out_;
};

// The loop running in this process, if it is an actor (nullptr elsewhere, and in its children).
actor_loop* current_actor();

} // namespace multiproc::detail
