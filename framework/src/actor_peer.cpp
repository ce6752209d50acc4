#include "actor_peer.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "actor_loop.hpp"
#include "actor_node.hpp"
#include "actor_socket.hpp"
#include "launch.hpp"
#include "log.hpp"
#include "multiproc/detail/errc.hpp"

namespace multiproc::detail {

namespace {

std::uint64_t read_u64(std::string_view payload, std::size_t at) {
  std::uint64_t v = 0;
  std::memcpy(&v, payload.data() + at, 8);
  return v;
}

// The kernel's record of an ended process that nobody reaped yet: field 52 of /proc/PID/stat
// holds its wait status while it is a zombie.
std::optional<int> zombie_exit_code(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(line.substr(close + 2));
  std::string field;
  std::vector<std::string> rest;  // from field 3 (state) on
  while (fields >> field) rest.push_back(field);
  if (rest.size() < 50 || rest[0] != "Z") return std::nullopt;
  int status = std::stoi(rest[49]);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status);
}

// A process whose sockets closed is tearing down; once it is a zombie its status is readable.
std::optional<int> exit_code_of_stranger(pid_t pid) {
  int pidfd = pidfd_open(pid);
  if (pidfd < 0) return std::nullopt;
  bool ended = block_until_readable(pidfd, deadline_after(std::chrono::seconds(1)));
  ::close(pidfd);
  if (!ended) return std::nullopt;
  return zombie_exit_code(pid);
}

// How long a dropped connection to an actor on a node waits for its link process to end.
constexpr std::chrono::seconds link_patience{2};

// Posted bytes to one actor beyond which the sender writes them itself.
constexpr std::size_t max_posted = 256 * 1024;

// Writes posted frames for the threads that are not an actor's loop: CPython's Queue feeder, one
// per process, started by the first send.
struct Feeder {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::shared_ptr<actor_peer>> dirty;
  bool started = false;
};
// An actor's loop thread flushes its own posts after each message: no thread in actors.
struct LoopPosts {
  std::thread::id loop_thread;
  std::vector<std::shared_ptr<actor_peer>> dirty;
};

struct Peers {
  std::mutex m;
  std::unordered_map<std::string, std::shared_ptr<actor_peer>> by_address;
  std::unordered_map<std::string, std::shared_ptr<Process>> spawned;
  std::unordered_map<std::string, int> ended;  // exit codes of actors seen to end
};

Feeder& feeder() {
  static auto* f = new Feeder;  // never destroyed, as Peers
  return *f;
}
LoopPosts& loop_posts() {
  static auto* l = new LoopPosts;
  return *l;
}

void flush_all(std::vector<std::shared_ptr<actor_peer>>& dirty) {
  for (auto& peer : dirty) peer->flush();
  dirty.clear();
}

void run_feeder() {
  auto& f = feeder();
  std::vector<std::shared_ptr<actor_peer>> batch;
  for (;;) {
    {
      std::unique_lock lk(f.m);
      f.cv.wait(lk, [&] { return !f.dirty.empty(); });
      batch.swap(f.dirty);
    }
    flush_all(batch);
  }
}

void schedule_flush(std::shared_ptr<actor_peer> peer) {
  auto& loop = loop_posts();
  if (current_actor() && std::this_thread::get_id() == loop.loop_thread) {
    loop.dirty.push_back(std::move(peer));
    return;
  }
  auto& f = feeder();
  std::lock_guard lk(f.m);
  f.dirty.push_back(std::move(peer));
  if (!f.started) {
    std::thread(run_feeder).detach();
    f.started = true;
  }
  f.cv.notify_one();
}

Peers& peers_unhooked() {
  static auto* p = new Peers;  // never destroyed: used from exit hooks and children
  return *p;
}

// A forked child must not share its parent's sockets (their frames would interleave) nor think
// it spawned its parent's actors. Their descriptors are internal, already closed in the child;
// the objects are abandoned unfreed, as another thread may have held their locks at fork time.
void forget_peers_in_child() {
  new (&peers_unhooked()) Peers;
  new (&feeder()) Feeder;
  new (&loop_posts()) LoopPosts;
}

Peers& peers() {
  static std::once_flag once;
  std::call_once(once, [] {
    on_fork_child(forget_peers_in_child);
    at_process_exit(flush_posted, 0);
  });
  return peers_unhooked();
}

} // namespace

void flush_posted() {
  flush_posted_by_loop();
  auto& f = feeder();
  std::vector<std::shared_ptr<actor_peer>> batch;
  {
    std::lock_guard lk(f.m);
    batch.swap(f.dirty);
  }
  flush_all(batch);
}

void flush_posted_by_loop() {
  auto& loop = loop_posts();
  if (current_actor() && std::this_thread::get_id() == loop.loop_thread) flush_all(loop.dirty);
}

void become_loop_thread() { loop_posts().loop_thread = std::this_thread::get_id(); }

actor_frame frame_kind(std::string_view payload) { return static_cast<actor_frame>(payload[0]); }
std::uint64_t frame_type_id(std::string_view payload) { return read_u64(payload, 1); }
std::uint64_t frame_request_id(std::string_view payload) { return read_u64(payload, 9); }
std::string_view frame_body(std::string_view payload) { return payload.substr(actor_header); }

actor_peer::actor_peer(int fd, ActorRef ref) : fd_(fd), ref_(std::move(ref)) { register_internal_fd(fd_); }

actor_peer::~actor_peer() {
  unregister_internal_fd(fd_);
  ::close(fd_);
  if (link_pidfd_ < 0) return;
  // The link process ends at this EOF; one that does not is killed.
  if (!block_until_readable(link_pidfd_, deadline_after(link_patience))) pidfd_send_signal(link_pidfd_, SIGKILL);
  try_reap(link_pidfd_, true);
  unregister_internal_fd(link_pidfd_);
  ::close(link_pidfd_);
}

bool actor_peer::write(std::string& frame) {
  std::lock_guard lk(write_m_);
  return write_locked(&frame);
}

bool actor_peer::flush() {
  std::lock_guard lk(write_m_);
  return write_locked(nullptr);
}

// With write_m_ held, so that whatever leaves the box is on the socket before anything after it.
bool actor_peer::write_locked(std::string* frame) {
  std::string batch;
  {
    std::lock_guard lk(box_m_);
    batch.swap(box_);
  }
  try {
    if (batch.empty()) {
      if (frame) write_reserved_frame(fd_, *frame);
    } else {
      if (frame) append_frame(batch, std::string_view(*frame).substr(frame_reserve));
      write_bytes(fd_, batch);
    }
    return true;
  } catch (const OSError&) {
    return false;  // the actor is gone (EPIPE, ECONNRESET): as Erlang, the messages are dropped
  }
}

void actor_peer::post(std::string& frame) {
  bool was_empty;
  bool full;
  {
    std::lock_guard lk(box_m_);
    was_empty = box_.empty();
    append_frame(box_, std::string_view(frame).substr(frame_reserve));
    full = box_.size() >= max_posted;
  }
  if (full) {
    flush();  // the sender outruns the writer: it writes itself, and waits while the actor is full
  } else if (was_empty) {
    schedule_flush(shared_from_this());
  }
}

std::uint64_t actor_peer::submit(std::string& frame) {
  std::uint64_t id;
  {
    std::lock_guard lk(m_);
    if (ended_) throw ActorExited("actor " + ref_.address() + " has ended", exitcode_);
    id = ++next_id_;
    pending_.emplace(id, std::make_shared<slot>());
  }
  std::memcpy(frame.data() + actor_header_at + 9, &id, 8);
  write(frame);  // when the actor is gone, reading finds its end
  return id;
}

std::string actor_peer::wait(std::uint64_t id, Deadline deadline) {
  std::unique_lock lk(m_);
  auto it = pending_.find(id);
  if (it == pending_.end()) throw Error("no request " + std::to_string(id) + " is pending");
  auto s = it->second;
  while (!s->done) {
    if (deadline && Clock::now() >= *deadline) {
      pending_.erase(id);
      throw TimeoutError("the actor did not answer within the timeout");
    }
    if (!reading_) {
      reading_ = true;
      lk.unlock();
      try {
        read_until(id, deadline);
      } catch (...) {
        lk.lock();
        reading_ = false;
        cv_.notify_all();
        throw;
      }
      lk.lock();
      reading_ = false;
      cv_.notify_all();
    } else if (deadline) {
      cv_.wait_until(lk, *deadline);
    } else {
      cv_.wait(lk);
    }
  }
  pending_.erase(id);
  if (s->error) std::rethrow_exception(s->error);
  return std::move(s->reply);
}

void actor_peer::read_until(std::uint64_t id, Deadline deadline) {
  for (;;) {
    try {
      while (auto frame = in_.next())
        if (take(*frame, id)) return;
      if (!wait_readable(fd_, deadline)) return;
      if (in_.fill(fd_) == frame_reader::fill_result::eof) return end();
    } catch (const Error& e) {
      log(LogLevel::warning, "dropping the connection to actor {}: {}", ref_.address(), e.what());
      return end();
    }
  }
}

bool actor_peer::take(std::string_view frame, std::uint64_t id) {
  if (frame.size() < actor_header) throw Error("an actor sent a frame too short for its header");
  auto kind = frame_kind(frame);
  std::lock_guard lk(m_);
  if (kind == actor_frame::exit_notice) {
    notice_ = decode<int>(frame_body(frame));
    return false;
  }
  if (kind != actor_frame::reply && kind != actor_frame::reply_error) return false;
  auto rid = frame_request_id(frame);
  auto it = pending_.find(rid);
  if (it == pending_.end()) return false;  // its requester gave up waiting
  it->second->done = true;
  it->second->reply.assign(frame);
  cv_.notify_all();
  return rid == id;
}

void actor_peer::end() {
  std::optional<int> notice;
  {
    std::lock_guard lk(m_);
    if (ended_) return;
    notice = notice_;
  }
  int code = learn_exit_code(ref_, notice);
  std::lock_guard lk(m_);
  ended_ = true;
  exitcode_ = code;
  for (auto& [rid, s] : pending_) {
    if (s->done) continue;
    s->done = true;
    s->error = std::make_exception_ptr(
        ActorExited("actor " + ref_.address() + " ended (exit code " + std::to_string(code) + ") before it answered", code));
  }
  cv_.notify_all();
}

bool actor_peer::pump() {
  {
    std::lock_guard lk(m_);
    if (reading_ || ended_) return ended_;
    reading_ = true;
  }
  try {
    while (auto frame = in_.next()) take(*frame, 0);
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      if (in_.fill(fd_) == frame_reader::fill_result::eof) {
        end();
      } else {
        while (auto frame = in_.next()) take(*frame, 0);
      }
    }
  } catch (const Error& e) {
    log(LogLevel::warning, "dropping the connection to actor {}: {}", ref_.address(), e.what());
    end();
  }
  std::lock_guard lk(m_);
  reading_ = false;
  cv_.notify_all();
  return ended_;
}

bool actor_peer::ended() {
  std::lock_guard lk(m_);
  return ended_;
}
int actor_peer::exitcode() {
  std::lock_guard lk(m_);
  return exitcode_;
}

std::shared_ptr<actor_peer> peer_for(const ActorRef& ref) {
  auto& p = peers();
  {
    std::lock_guard lk(p.m);
    if (p.ended.count(ref.address())) return nullptr;
    auto it = p.by_address.find(ref.address());
    if (it != p.by_address.end()) return it->second;
  }
  std::shared_ptr<actor_peer> peer;
  if (is_remote_address(ref.address())) {
    peer = connect_remote(ref);
  } else if (int fd = connect_abstract(ref.address()); fd >= 0) {
    peer = std::make_shared<actor_peer>(fd, ref);
  }
  if (!peer) return nullptr;
  std::lock_guard lk(p.m);
  // Another thread may have connected meanwhile: keep one connection, so that order holds.
  return p.by_address.try_emplace(ref.address(), peer).first->second;
}

void adopt_peer(std::shared_ptr<actor_peer> peer) {
  auto& p = peers();
  std::lock_guard lk(p.m);
  p.by_address.try_emplace(peer->ref().address(), std::move(peer));
}

void forget_peer(actor_peer& peer) {
  bool ended = peer.ended();
  int code = peer.exitcode();
  auto& p = peers();
  std::lock_guard lk(p.m);
  auto it = p.by_address.find(peer.ref().address());
  if (it != p.by_address.end() && it->second.get() == &peer) p.by_address.erase(it);
  if (ended) p.ended.emplace(peer.ref().address(), code);
}

void drop_peer(const ActorRef& ref) {
  auto& p = peers();
  std::lock_guard lk(p.m);
  p.by_address.erase(ref.address());
}

std::optional<int> recorded_end(const ActorRef& ref) {
  auto& p = peers();
  std::lock_guard lk(p.m);
  auto it = p.ended.find(ref.address());
  if (it == p.ended.end()) return std::nullopt;
  return it->second;
}

void record_end(const ActorRef& ref, int exitcode) {
  auto& p = peers();
  std::lock_guard lk(p.m);
  p.ended.emplace(ref.address(), exitcode);
}

std::optional<int> reap_spawned(const ActorRef& ref, Deadline deadline) {
  auto process = spawned_process(ref);
  if (!process) return recorded_end(ref);
  int code;
  try {
    if (!process->join(deadline ? std::chrono::duration<double>(*deadline - Clock::now()) : std::chrono::hours(24 * 365)))
      return std::nullopt;
    code = process->exitcode().value_or(255);
    // Recorded before the Process is closed: a thread that finds it closed finds the code.
    record_end(ref, code);
    process->close();
  } catch (const ValueError&) {
    return recorded_end(ref);  // another thread reaped and closed it meanwhile
  }
  forget_spawned(ref);
  drop_peer(ref);
  return code;
}

int learn_exit_code(const ActorRef& ref, std::optional<int> notice) {
  if (auto code = recorded_end(ref)) return *code;
  if (notice) return *notice;
  if (auto code = reap_spawned(ref, deadline_after(std::chrono::seconds(5)))) return *code;
  // An actor on a node: its pid means another process here.
  if (ref.pid() <= 0 || is_remote_address(ref.address())) return 255;
  return exit_code_of_stranger(ref.pid()).value_or(255);
}

void adopt_spawned(const ActorRef& ref, std::shared_ptr<Process> process) {
  auto& p = peers();
  std::lock_guard lk(p.m);
  p.spawned[ref.address()] = std::move(process);
}

std::shared_ptr<Process> spawned_process(const ActorRef& ref) {
  auto& p = peers();
  std::lock_guard lk(p.m);
  auto it = p.spawned.find(ref.address());
  return it == p.spawned.end() ? nullptr : it->second;
}

std::vector<ActorRef> spawned_refs() {
  auto& p = peers();
  std::lock_guard lk(p.m);
  std::vector<ActorRef> out;
  for (auto& [address, process] : p.spawned)
    out.push_back(actor_ref_access::make("", *process->pid(), address));
  return out;
}

void forget_spawned(const ActorRef& ref) {
  auto& p = peers();
  std::lock_guard lk(p.m);
  p.spawned.erase(ref.address());
}

} // namespace multiproc::detail
