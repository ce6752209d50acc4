// This process's side of its connections to actors: one socket per actor (so one process's
// messages arrive in order), shared by the process's threads. Requests carry ids; whichever
// waiting thread holds the read turn reads the socket and hands each answer to its waiter.
// The same socket brings the actor's exit notice (its exit code) just before EOF, which is how
// requesters learn ActorExited and monitors learn Down.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "multiproc/actor.hpp"
#include "pool_worker.hpp"

namespace multiproc::detail {

struct actor_ref_access {
  static ActorRef make(std::string name, pid_t pid, std::string address) {
    return ActorRef(std::move(name), pid, std::move(address));
  }
};

class actor_peer : public std::enable_shared_from_this<actor_peer> {
public:
  actor_peer(int fd, ActorRef ref);
  ~actor_peer();
  actor_peer(const actor_peer&) = delete;
  actor_peer& operator=(const actor_peer&) = delete;

  int fd() const { return fd_; }
  const ActorRef& ref() const { return ref_; }
  // For an actor on a node: the link process relaying fd (actor_node.hpp), reaped with the peer,
  // and the route back to this host that link is, at the node ("node!route", or "").
  void own_link(int pidfd, std::string route) {
    link_pidfd_ = pidfd;
    route_ = std::move(route);
  }
  const std::string& route() const { return route_; }
  // Writes what post() queued, then one whole frame (buffer with wire header space), in that
  // order. false when the actor is gone.
  bool write(std::string& frame);
  // Queues a frame behind this process's earlier ones and returns: a send. The frames leave in
  // batches, written by this process's feeder thread, or in an actor by its loop once the
  // current message is handled, or by the next write() to the same actor, whichever comes first.
  void post(std::string& frame);
  // Writes what post() queued. false when the actor is gone.
  bool flush();
  // Sends a request frame under a fresh id and waits until deadline for the answer: the reply
  // frame's payload (actor header included). TimeoutError, ActorExited.
  std::string call(std::string& frame, Deadline deadline) { return wait(submit(frame), deadline); }
  // call's two halves: submit sends in the caller's turn (so that order holds), wait may run on
  // another thread.
  std::uint64_t submit(std::string& frame);
  std::string wait(std::uint64_t id, Deadline deadline);
  // Reads what has arrived, without waiting: hands answers to their waiters, notes the end.
  // Whether the actor has ended. Does nothing while another thread reads.
  bool pump();
  // Whether the actor has ended (as far as this connection has seen), and then its exit code.
  bool ended();
  int exitcode();

private:
  // The reader's work: reads until `id` is answered, the deadline passes or the actor ended.
  void read_until(std::uint64_t id, Deadline deadline);
  // Takes one frame from the actor; true when it answered `id`.
  bool take(std::string_view frame, std::uint64_t id);
  void end();

  struct slot {
    bool done = false;
    std::string reply;
    std::exception_ptr error;
  };

  bool write_locked(std::string* frame);

  int fd_;
  int link_pidfd_ = -1;
  std::string route_;
  ActorRef ref_;
  std::mutex write_m_;  // the socket's write side; held across the write
  std::mutex box_m_;    // guards box_
  std::string box_;     // posted frames not written yet, headers included
  std::mutex m_;  // guards what follows
  std::condition_variable cv_;
  bool reading_ = false;
  bool ended_ = false;
  std::optional<int> notice_;
  int exitcode_ = 255;
  std::uint64_t next_id_ = 0;
  std::map<std::uint64_t, std::shared_ptr<slot>> pending_;
  frame_reader in_;  // the reader's alone
};

// Writes every posted frame of this process (at its exit).
void flush_posted();
// In an actor's process: the connections its loop thread posted to, to flush after each message.
void flush_posted_by_loop();
// Called by an actor's loop on its thread before it runs init.
void become_loop_thread();

// This process's connection to the actor: opened on first use, nullptr when the actor has ended
// (nobody listens at its address any more).
std::shared_ptr<actor_peer> peer_for(const ActorRef& ref);
// Caches a connection made otherwise (to an actor spawned on a node), unless one is cached already.
void adopt_peer(std::shared_ptr<actor_peer> peer);
// Drops a cached connection, remembering the actor's exit code when it has ended (its socket is
// closed then; later peer_for calls for it give nullptr).
void forget_peer(actor_peer& peer);
// Drops the cached connection to an actor that has ended (its socket closes with the last user).
void drop_peer(const ActorRef& ref);
// The exit code of an actor this process saw end; record it.
std::optional<int> recorded_end(const ActorRef& ref);
void record_end(const ActorRef& ref, int exitcode);
// Joins an actor this process spawned (until deadline) and frees its Process: its exit code,
// nullopt when it is not ours or still runs.
std::optional<int> reap_spawned(const ActorRef& ref, Deadline deadline);

// The exit code of an actor whose end was seen: the one recorded, else the notice it sent, else
// what its Process says (when this process spawned it), else the kernel's zombie record, else 255.
int learn_exit_code(const ActorRef& ref, std::optional<int> notice);

// The actors this process spawned: their Process objects, so that they are reaped and stopped.
void adopt_spawned(const ActorRef& ref, std::shared_ptr<Process> process);
std::shared_ptr<Process> spawned_process(const ActorRef& ref);
void forget_spawned(const ActorRef& ref);
std::vector<ActorRef> spawned_refs();

// Frame fields (actor_message.hpp's layout) of a frame payload (without the wire header).
actor_frame frame_kind(std::string_view payload);
std::uint64_t frame_type_id(std::string_view payload);
std::uint64_t frame_request_id(std::string_view payload);
std::string_view frame_body(std::string_view payload);
// A frame with an empty header and `body` packed.
template <class T>
std::string control_frame(actor_frame kind, std::uint64_t request_id, const T& body) {
  Buffer buf;
  buf.data.assign(actor_body_at, '\0');
  buf.data[actor_header_at] = static_cast<char>(kind);
  std::memcpy(buf.data.data() + actor_header_at + 9, &request_id, 8);
  pack_into(buf, body);
  return std::move(buf.data);
}

} // namespace multiproc::detail
