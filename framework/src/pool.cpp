// The Pool's data plane: chunks go from the submitting thread straight into worker sockets, and
// answers are read by whichever thread gets there first — a caller spinning in get() or the
// pool's result thread — and written straight into the waiting job. The supervisor actor
// (actors/pool_supervisor) is the control plane: worker exits, restarts, breaking the pool.
#include "multiproc/pool.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iostream>
#include <system_error>

#include "actors_plugin.hpp"
#include "launch.hpp"
#include "log.hpp"
#include "node.hpp"
#include "multiproc/detail/errc.hpp"
#include "pool_worker.hpp"

namespace multiproc::detail {

namespace {

constexpr std::uint64_t wake_key = ~std::uint64_t{0};
// How long a chunk may wait behind others on one worker: the window of chunks in flight per
// worker is this over the worker's measured time per chunk (so slow tasks go one at a time and
// trivial ones are pipelined 64 deep).
constexpr double window_target_us = 2000;
constexpr std::size_t max_window = 64;
constexpr auto terminate_grace = std::chrono::milliseconds(200);

[[noreturn]] void throw_errno(const char* what) {
  throw OSError(std::string(what) + ": " + std::strerror(errno), errno);
}

std::exception_ptr error_ptr(errc code, const std::string& message, const std::string& detail = {}) {
  try {
    raise(code, message, detail);
  } catch (...) {
    return std::current_exception();
  }
}

void put_be32(std::string& out, std::uint32_t v) {
  char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  out.append(b, 4);
}

void close_internal(int& fd) {
  if (fd < 0) return;
  unregister_internal_fd(fd);
  ::close(fd);
  fd = -1;
}

std::string describe_exit(pid_t pid, int code, const std::string& node) {
  if (!node.empty() && code == actors::node_lost_exit)
    return "the pool's worker on node " + node + " was lost (node down or cut off) while running the task";
  std::string who = node.empty() ? "a pool worker (pid " + std::to_string(pid) + ")"
                                 : "the proxy (pid " + std::to_string(pid) + ") of a worker on node " + node;
  if (code < 0) return who + " was killed by signal " + std::to_string(-code) + " while running the task";
  return who + " exited with code " + std::to_string(code) + " while running the task";
}

struct chunk_ref {
  std::shared_ptr<submission> sub;
  std::size_t index;
  unsigned retries = 0;  // times it was re-run after its worker died
  const submission::chunk& span() const { return sub->chunks[index]; }
  job& owner() const { return *sub->owner; }
};

struct in_flight : chunk_ref {
  Clock::time_point sent;
  bool timed_out = false;  // its worker was killed at its deadline (task_timeout)
};

struct worker {
  pid_t pid;
  int pidfd;
  int sock;
  bool forked;  // shares the parent's addresses; else it is sent a definition of each function
  std::vector<const void*> defined;
  std::size_t budget;  // chunks it may still be given before it retires (maxtasksperchild)
  std::deque<in_flight> inflight;
  std::string out;  // frames not yet written
  std::size_t out_sent = 0;
  bool want_write = false;
  bool eof = false;
  std::string node;    // "host:port" of a node for a remote worker (its proxy runs here); "" locally
  bool ready = true;   // a remote worker is ready once its proxy reached the node, an
                       //   announcing one (task_timeout) once its initializer ran
  bool killed_at_deadline = false;  // task_timeout: settled as a planned end, not a crash
  frame_reader in;
  double service_us = 0;  // moving average of the time per chunk; 0 until measured
  Clock::time_point last_answer{};

  std::size_t window() const {
    if (service_us <= 0) return 1;
    return std::clamp<std::size_t>(static_cast<std::size_t>(window_target_us / service_us), 1, max_window);
  }
  bool can_take() const { return ready && !eof && budget > 0 && inflight.size() < window(); }
};

// CPython's names: the start method's name + "PoolWorker-N".
std::string worker_name(StartMethod method, int n) {
  const char* kind = method == StartMethod::spawn ? "Spawn" : method == StartMethod::forkserver ? "ForkServer" : "Fork";
  return kind + std::string("PoolWorker-") + std::to_string(n);
}

// The initializer of a spawn or forkserver worker crosses by identity: it must be a plain
// function pointer.
void (*crossing_initializer(const std::function<void()>& initializer))() {
  if (!initializer) return nullptr;
  if (auto* fn = initializer.target<void (*)()>()) return *fn;
  throw ValueError("under start methods spawn and forkserver PoolOptions::initializer must hold a function "
                   "pointer (a function, or a captureless lambda converted with unary +), not " +
                   demangle(initializer.target_type().name()) + ": its state cannot reach a fresh process");
}

// The target of a spawn or forkserver worker.
void spawned_pool_worker(Descriptor sock, void (*initializer)(), std::size_t maxtasks, bool announce) {
  std::function<void()> init;
  if (initializer) init = initializer;
  run_pool_worker(sock.fd, init, maxtasks, false, announce);
}

static_assert(worker_ready_frame == actors::node_ready_frame, "the pool reads both as a worker's ready frame");

std::string describe_timeout(const in_flight& chunk, std::chrono::milliseconds limit, pid_t pid) {
  auto count = chunk.span().count;
  std::string what = count == 1 ? "the task ran longer than task_timeout (" + std::to_string(limit.count()) + " ms)"
                                : "the chunk of " + std::to_string(count) + " tasks ran longer than " +
                                      std::to_string(count) + " x task_timeout (" + std::to_string(limit.count()) +
                                      " ms)";
  return what + "; its worker (pid " + std::to_string(pid) + ") was killed";
}

} // namespace

void prefault(void* data, std::size_t bytes) {
  constexpr std::size_t worth = 256 * 1024;  // below this the faults cost less than the call
  if (bytes < worth) return;
  auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  auto begin = (reinterpret_cast<std::uintptr_t>(data) + page - 1) & ~(page - 1);
  auto end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(page - 1);
  // Before Linux 5.14 this fails with EINVAL and the writes fault page by page, as without it.
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
}

class pool_core final : public actors::pool_control, public std::enable_shared_from_this<pool_core> {
public:
  explicit pool_core(PoolOptions options);
  ~pool_core() override;
  void start();

  void handover(const std::shared_ptr<submission>& sub, std::string bytes, std::vector<submission::chunk> chunks);
  void seal(submission& sub);
  void abandon(submission& sub);
  void poll();
  void close();
  void terminate();
  void join();
  std::vector<pid_t> pids() const;
  bool owned_here() const { return owner_ == ::getpid(); }
  // Workers say when their initializer ran: a deadline starts no earlier.
  bool announces() const { return options_.task_timeout.count() > 0; }
  std::size_t size() const { return slot_nodes_.size(); }
  void check_owner() const {
    if (!owned_here()) throw ValueError("this Pool belongs to another process (pid " + std::to_string(owner_) + ")");
  }

  bool settle_exit(std::size_t slot) override;
  int start_worker(std::size_t slot) override;
  void break_pool(const std::string& why) override;

private:
  enum class state { running, closed, terminated };
  enum class queue_end { back, front };

  void result_loop();
  void handle_events(const epoll_event* events, int n);
  void read_answers(worker& w);
  void handle_answer(worker& w, std::string_view frame);
  void add_pending(chunk_ref ref, queue_end end);
  void dispatch();
  void send_chunk(worker& w, chunk_ref ref);
  void define_function(worker& w, const void* address);
  void flush(worker& w);
  void set_write_interest(worker& w, bool on);
  void fail_chunk(const chunk_ref& ref, std::exception_ptr error);
  void chunk_done(job& j);
  void finish(job& j);
  void complete(job& j);
  void run_callbacks(const std::vector<std::shared_ptr<job>>& jobs);
  void fail_everything(errc code, const std::string& message);
  void remove_worker(std::size_t slot);
  bool wants_workers() const;
  int run_node_proxy(int sock, const std::string& node);
  void stop_result_thread();
  void wake_result_thread();
  std::optional<Clock::time_point> deadline(const worker& w) const;
  int deadline_wait_ms();
  void kill_overdue();

  const PoolOptions options_;
  const StartMethod method_;
  const pid_t owner_ = ::getpid();
  mutable std::mutex m_;
  std::condition_variable idle_cv_;  // unfinished_ reached 0
  state state_ = state::running;
  std::string broken_;  // why the pool broke; empty while it is not broken
  std::deque<chunk_ref> pending_;
  std::vector<std::unique_ptr<worker>> workers_;  // by slot; null while a slot is empty
  std::vector<std::string> slot_nodes_;            // by slot: the node of a remote one, "" locally
  std::size_t unfinished_ = 0;                    // jobs submitted and not completed
  std::atomic<std::size_t> in_flight_{0};
  std::vector<std::shared_ptr<job>> callbacks_;  // finished jobs whose callbacks are due
  bool stopping_ = false;
  bool timer_idle_ = false;  // task_timeout: the result thread waits without a deadline
  bool shut_down_ = false;  // terminate() or join() took the workers down
  int epoll_ = -1;
  int wake_ = -1;
  std::thread result_thread_;
  std::thread::id result_thread_id_;
  std::unique_ptr<actors::pool_supervisor> supervisor_;
};

void poll_results(pool_core& core) { core.poll(); }

pool_core::pool_core(PoolOptions options)
    : options_(std::move(options)), method_(options_.start_method.value_or(get_start_method())) {
  slot_nodes_.assign(options_.processes, std::string());
  auto remote = node_slots(options_);
  slot_nodes_.insert(slot_nodes_.end(), remote.begin(), remote.end());
  if (slot_nodes_.empty()) throw ValueError("Number of processes must be at least 1");
  epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_ < 0) throw_errno("epoll_create1 failed");
  register_internal_fd(epoll_);
  wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_ < 0) {
    close_internal(epoll_);
    throw_errno("eventfd failed");
  }
  register_internal_fd(wake_);
  epoll_event ev{EPOLLIN, {.u64 = wake_key}};
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &ev);
  workers_.resize(slot_nodes_.size());
}

pool_core::~pool_core() {
  close_internal(wake_);
  close_internal(epoll_);
}

void pool_core::start() {
  // Before the pool's first thread and first fork: a forked child must not dlopen (actors_plugin.hpp).
  const auto& plugin = actors_plugin();
  {
    // result_loop() takes m_ first, so it sees result_thread_id_ set.
    std::lock_guard lk(m_);
    try {
      result_thread_ = std::thread([this] { result_loop(); });
    } catch (const std::system_error& e) {  // at a thread limit (RLIMIT_NPROC, a cgroup's pids.max)
      throw OSError(std::string("cannot start the pool's result thread: ") + e.code().message(),
                    e.code().value());
    }
    result_thread_id_ = result_thread_.get_id();
  }
  supervisor_ =
      plugin.make_pool_supervisor(*this, actors::restart_intensity(options_.max_restarts, options_.restart_window));
  for (std::size_t slot = 0; slot < workers_.size(); ++slot) supervisor_->watch(slot, start_worker(slot));
}

// ---- workers ------------------------------------------------------------------------------

// The body of a remote worker's slot: its proxy, which relays the slot to a worker on the node.
int pool_core::run_node_proxy(int sock, const std::string& node) {
  return actors_plugin().run_node_proxy(sock, node, options_.authkey);
}

bool pool_core::wants_workers() const {
  if (!broken_.empty()) return false;
  return state_ == state::running || (state_ == state::closed && unfinished_ > 0);
}

int pool_core::start_worker(std::size_t slot) {
  {
    std::lock_guard lk(m_);
    if (!wants_workers()) return -1;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair failed");
  register_internal_fd(sv[0]);
  register_internal_fd(sv[1]);
  auto identity = next_child_identity();
  ChildIdentity who{worker_name(method_, identity.back()), true, identity};
  Forked child;
  try {
    const auto& node = slot_nodes_[slot];
    // A node slot's process is a CAF relay to the node, not a worker: it is always forked.
    child = start_child(
        node.empty() ? method_ : StartMethod::fork, who,
        [&] {
          if (!node.empty()) return run_guarded([&] { throw SystemExit{run_node_proxy(sv[1], node)}; });
          return run_guarded([&] {
            run_pool_worker(sv[1], options_.initializer, options_.maxtasksperchild, true, announces());
          });
        },
        [&] {
          return make_spawn_target(&spawned_pool_worker, std::make_tuple(Descriptor{sv[1]},
                                                                         crossing_initializer(options_.initializer),
                                                                         options_.maxtasksperchild, announces()));
        },
        {sv[1]});
  } catch (...) {
    close_internal(sv[0]);
    close_internal(sv[1]);
    throw;
  }
  close_internal(sv[1]);
  ::fcntl(sv[0], F_SETFL, ::fcntl(sv[0], F_GETFL) | O_NONBLOCK);
  // A second pidfd, not a dup: the supervisor's broker makes its descriptor non-blocking, and a
  // dup would share that flag and break the blocking reaps here.
  int exit_fd = pidfd_open(child.pid);
  if (exit_fd < 0) {
    int err = errno;
    pidfd_send_signal(child.pidfd, SIGKILL);
    try_reap(child.pidfd, true);
    close_internal(child.pidfd);
    close_internal(sv[0]);
    throw OSError(std::string("pidfd_open failed: ") + std::strerror(err), err);
  }

  auto w = std::make_unique<worker>();
  w->pid = child.pid;
  w->pidfd = child.pidfd;
  w->sock = sv[0];
  w->forked = method_ == StartMethod::fork;
  w->budget = options_.maxtasksperchild ? options_.maxtasksperchild : SIZE_MAX;
  w->node = slot_nodes_[slot];
  w->ready = w->node.empty() && !announces();
  epoll_event ev{EPOLLIN | EPOLLRDHUP, {.u64 = slot}};
  std::lock_guard lk(m_);
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, w->sock, &ev);
  workers_[slot] = std::move(w);
  dispatch();
  return exit_fd;
}

bool pool_core::settle_exit(std::size_t slot) {
  int pidfd;
  {
    std::lock_guard lk(m_);
    if (!workers_[slot]) return false;
    pidfd = workers_[slot]->pidfd;
  }
  int code = try_reap(pidfd, true).value_or(255);
  std::lock_guard lk(m_);
  auto& w = *workers_[slot];
  if (!w.eof) read_answers(w);  // what it answered before it died still counts
  bool lost = !w.inflight.empty();
  if (lost) {
    // Answers come in order and a worker answers a chunk before starting the next, so the
    // first unanswered chunk is the one it died in (re-run while it has retries left, else it
    // fails); the others never started: run them again.
    in_flight_ -= w.inflight.size();
    auto& died_in = w.inflight.front();
    if (died_in.timed_out) {
      fail_chunk(died_in, error_ptr(errc::timeout, describe_timeout(died_in, options_.task_timeout, w.pid)));
      w.inflight.pop_front();
    } else if (w.killed_at_deadline) {
      // Its overdue chunk answered just before the kill: the others wait their turn again.
    } else if (died_in.retries < options_.task_retries) {
      ++died_in.retries;
      log(LogLevel::info, "re-running a chunk after {} (retry {} of {})", describe_exit(w.pid, code, w.node),
          died_in.retries, options_.task_retries);
    } else {
      fail_chunk(died_in, error_ptr(errc::worker_lost, describe_exit(w.pid, code, w.node), std::to_string(code)));
      w.inflight.pop_front();
    }
    for (auto it = w.inflight.rbegin(); it != w.inflight.rend(); ++it) add_pending(*it, queue_end::front);
    w.inflight.clear();
  }
  bool crashed = !w.killed_at_deadline && (lost || code != 0);
  remove_worker(slot);
  dispatch();
  return crashed;
}

void pool_core::remove_worker(std::size_t slot) {
  auto& w = workers_[slot];
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, w->sock, nullptr);
  close_internal(w->sock);
  close_internal(w->pidfd);
  w.reset();
}

void pool_core::break_pool(const std::string& why) {
  std::lock_guard lk(m_);
  if (!broken_.empty()) return;
  broken_ = why;
  while (!pending_.empty()) {
    auto ref = std::move(pending_.front());
    pending_.pop_front();
    fail_chunk(ref, error_ptr(errc::broken_pool, broken_));
  }
}

// A broken pool starts no worker and nothing serves its pending list: a chunk that would wait
// there fails at once, the unstarted chunks of a worker that dies after the break too.
void pool_core::add_pending(chunk_ref ref, queue_end end) {
  if (!broken_.empty()) {
    fail_chunk(ref, error_ptr(errc::broken_pool, broken_));
  } else if (end == queue_end::front) {
    pending_.push_front(std::move(ref));
  } else {
    pending_.push_back(std::move(ref));
  }
}

std::vector<pid_t> pool_core::pids() const {
  check_owner();
  std::lock_guard lk(m_);
  std::vector<pid_t> out;
  for (const auto& w : workers_)
    if (w) out.push_back(w->pid);
  return out;
}

// ---- sending ------------------------------------------------------------------------------

// A call's first segment enters it into the pool (a closed pool refuses it; a terminated one
// refuses the later ones too); the job counts one chunk more than it has, its seal, so that it
// cannot finish while chunks may still come.
void pool_core::handover(const std::shared_ptr<submission>& sub, std::string bytes,
                         std::vector<submission::chunk> chunks) {
  auto& j = *sub->owner;
  bool first = sub->segments.empty();
  if (first) {
    check_owner();
    if (!options_.nodes.empty()) check_exported(sub->fn);
    j.pool = weak_from_this();
  }
  std::lock_guard lk(m_);
  if (first ? state_ != state::running : state_ == state::terminated)
    throw ValueError("Pool not running: no tasks can be submitted after close() or terminate()");
  if (first) {
    j.chunks_left = sub->total + 1;
    ++unfinished_;
  }
  auto segment = sub->segments.size();
  sub->segments.push_back(std::move(bytes));
  for (auto& c : chunks) {
    c.segment = segment;
    sub->chunks.push_back(c);
    add_pending({sub, sub->chunks.size() - 1}, queue_end::back);
  }
  dispatch();
}

void pool_core::seal(submission& sub) {
  std::lock_guard lk(m_);
  chunk_done(*sub.owner);
}

void pool_core::abandon(submission& sub) {
  std::lock_guard lk(m_);
  if (sub.segments.empty()) return;  // the call never entered the pool
  auto& j = *sub.owner;
  j.chunks_left -= sub.total - sub.chunks.size();
  chunk_done(j);
}

void pool_core::dispatch() {
  while (!pending_.empty()) {
    worker* best = nullptr;
    for (auto& w : workers_)
      if (w && w->can_take() && (!best || w->inflight.size() < best->inflight.size())) best = w.get();
    if (!best) break;
    send_chunk(*best, std::move(pending_.front()));
    pending_.pop_front();
  }
  for (auto& w : workers_)
    if (w && w->out.size() > w->out_sent && !w->want_write) flush(*w);
}

void pool_core::send_chunk(worker& w, chunk_ref ref) {
  const auto& span = ref.span();
  if (!w.forked) {
    define_function(w, reinterpret_cast<const void*>(ref.sub->runner));
    define_function(w, reinterpret_cast<const void*>(ref.sub->fn));
  }
  std::size_t size = chunk_header + span.size;
  if (size > 0x7fffffff) {
    put_be32(w.out, 0xffffffffu);
    put_be32(w.out, static_cast<std::uint32_t>(std::uint64_t(size) >> 32));
  }
  put_be32(w.out, static_cast<std::uint32_t>(size));
  w.out.append(reinterpret_cast<const char*>(&ref.sub->runner), sizeof ref.sub->runner);
  w.out.append(reinterpret_cast<const char*>(&ref.sub->fn), sizeof ref.sub->fn);
  w.out.append(ref.sub->segments[span.segment], span.offset, span.size);
  w.inflight.push_back({std::move(ref), Clock::now()});
  --w.budget;
  ++in_flight_;
  if (timer_idle_) {
    timer_idle_ = false;
    wake_result_thread();  // a deadline to keep
  }
}

// Once per function and worker: a worker runs a handful of functions, so the list stays short.
void pool_core::define_function(worker& w, const void* address) {
  if (std::find(w.defined.begin(), w.defined.end(), address) != w.defined.end()) return;
  auto frame = function_definition(address);
  put_be32(w.out, static_cast<std::uint32_t>(frame.size()));
  w.out += frame;
  w.defined.push_back(address);
}

void pool_core::flush(worker& w) {
  while (w.out_sent < w.out.size()) {
    ssize_t n = ::send(w.sock, w.out.data() + w.out_sent, w.out.size() - w.out_sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      w.out_sent += static_cast<std::size_t>(n);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      set_write_interest(w, true);  // the result thread finishes the write
      return;
    } else if (errno != EINTR) {
      break;  // the worker is gone; the supervisor settles its chunks
    }
  }
  w.out.clear();
  w.out_sent = 0;
  set_write_interest(w, false);
}

void pool_core::set_write_interest(worker& w, bool on) {
  if (w.want_write == on || w.eof) return;
  w.want_write = on;
  auto slot = static_cast<std::uint64_t>(std::find_if(workers_.begin(), workers_.end(),
                                                      [&](const auto& p) { return p.get() == &w; }) -
                                         workers_.begin());
  epoll_event ev{EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0u), {.u64 = slot}};
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, w.sock, &ev);
}

// ---- receiving ----------------------------------------------------------------------------

void pool_core::poll() {
  std::unique_lock lk(m_, std::try_to_lock);
  if (!lk || epoll_ < 0 || in_flight_ == 0) return;
  epoll_event events[16];
  int n = ::epoll_wait(epoll_, events, 16, 0);
  if (n > 0) handle_events(events, n);
}

void pool_core::result_loop() {
  { std::lock_guard lk(m_); }
  epoll_event events[64];
  for (;;) {
    int timeout = -1;
    if (announces()) {
      std::lock_guard lk(m_);
      timeout = deadline_wait_ms();
    }
    // No spinning here: a caller waiting for an answer spins and reads it itself.
    int n = ::epoll_wait(epoll_, events, 64, timeout);
    if (n < 0 || (n == 0 && timeout < 0)) continue;
    std::vector<std::shared_ptr<job>> due;
    bool stop;
    {
      std::lock_guard lk(m_);
      handle_events(events, n);
      if (announces()) kill_overdue();
      due.swap(callbacks_);
      stop = stopping_;
    }
    run_callbacks(due);
    if (stop) {
      std::lock_guard lk(m_);
      if (callbacks_.empty()) return;
    }
  }
}

void pool_core::handle_events(const epoll_event* events, int n) {
  for (int i = 0; i < n; ++i) {
    auto key = events[i].data.u64;
    if (key == wake_key) {
      if (std::this_thread::get_id() == result_thread_id_) {
        std::uint64_t count;
        while (::read(wake_, &count, sizeof count) > 0) {}
      }
      continue;
    }
    auto& w = workers_[key];
    if (!w) continue;
    if (events[i].events & EPOLLOUT) flush(*w);
    if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) read_answers(*w);
  }
  dispatch();
}

void pool_core::read_answers(worker& w) {
  try {
    for (;;) {
      auto got = w.in.fill(w.sock);
      while (auto frame = w.in.next()) handle_answer(w, *frame);
      if (got == frame_reader::fill_result::would_block) return;
      if (got == frame_reader::fill_result::eof) break;
    }
  } catch (const std::exception& e) {
    // Garbage from a worker: it cannot be trusted with more tasks; its exit settles the rest.
    std::cerr << "multiproc: pool worker " << w.pid << " sent a malformed answer (" << e.what()
              << "); killing it" << std::endl;
    pidfd_send_signal(w.pidfd, SIGKILL);
  }
  w.eof = true;
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, w.sock, nullptr);
}

void pool_core::handle_answer(worker& w, std::string_view frame) {
  if (!w.ready) {
    if (frame.size() != 1 || frame[0] != worker_ready_frame) throw Error("a pool worker did not say it is ready");
    w.ready = true;
    return;
  }
  if (w.inflight.empty()) throw Error("a pool worker answered a task it was never given");
  if (frame.empty()) throw Error("a pool worker sent an empty answer");
  auto ref = std::move(w.inflight.front());
  w.inflight.pop_front();
  --in_flight_;
  auto now = Clock::now();
  auto took = std::chrono::duration<double, std::micro>(now - std::max(ref.sent, w.last_answer)).count();
  w.service_us = w.service_us <= 0 ? took : 0.8 * w.service_us + 0.2 * took;
  w.last_answer = now;

  const auto& span = ref.span();
  try {
    if (static_cast<chunk_status>(frame[0]) == chunk_status::ok) {
      ref.owner().deliver_packed(span.first, frame.substr(1));
    } else {
      auto [type, message] = decode<std::tuple<std::string, std::string>>(frame.substr(1));
      ref.owner().fail(span.first, span.count, error_ptr(errc::remote_error, message, type));
    }
  } catch (...) {
    ref.owner().fail(span.first, span.count, std::current_exception());
  }
  chunk_done(ref.owner());
}

// ---- deadlines (task_timeout) --------------------------------------------------------------

// When the chunk a worker runs overruns: answers come in order and a worker starts a chunk as
// soon as it answered the one before, so the front chunk started when it was sent or when the
// previous answer came, whichever was later.
std::optional<Clock::time_point> pool_core::deadline(const worker& w) const {
  // A worker at EOF is ending on its own: its exit, not a deadline, settles its chunk.
  if (w.inflight.empty() || w.killed_at_deadline || w.eof) return std::nullopt;
  const auto& front = w.inflight.front();
  return std::max(front.sent, w.last_answer) + options_.task_timeout * front.span().count;
}

// The result thread's epoll timeout: until the earliest deadline, and never longer than
// task_timeout, since a deadline set meanwhile (a chunk sent, an answer read by a caller) is at
// least that far off. With nothing running it sleeps until send_chunk wakes it.
int pool_core::deadline_wait_ms() {
  auto now = Clock::now();
  auto until = now + options_.task_timeout;
  bool any = false;
  for (const auto& w : workers_) {
    if (!w) continue;
    if (auto d = deadline(*w)) {
      until = std::min(until, *d);
      any = true;
    }
  }
  timer_idle_ = !any;
  if (!any) return -1;
  auto wait = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
  return static_cast<int>(std::max<std::int64_t>(wait, 0));
}

// SIGKILL for a worker whose chunk overran; its exit settles the chunk (settle_exit).
void pool_core::kill_overdue() {
  auto now = Clock::now();
  for (auto& w : workers_) {
    if (!w) continue;
    auto d = deadline(*w);
    if (!d || *d > now) continue;
    w->inflight.front().timed_out = true;
    w->killed_at_deadline = true;
    log(LogLevel::info, "killing pool worker {}: its task ran longer than task_timeout ({} ms)", w->pid,
        options_.task_timeout.count());
    pidfd_send_signal(w->pidfd, SIGKILL);
  }
}

// ---- completion ---------------------------------------------------------------------------

void pool_core::fail_chunk(const chunk_ref& ref, std::exception_ptr error) {
  ref.owner().fail(ref.span().first, ref.span().count, std::move(error));
  chunk_done(ref.owner());
}

void pool_core::chunk_done(job& j) {
  if (--j.chunks_left == 0) finish(j);
}

void pool_core::finish(job& j) {
  if (!j.has_callbacks()) {
    complete(j);
    return;
  }
  // Callbacks run before the result becomes ready (as in CPython), on the result thread.
  callbacks_.push_back(j.shared_from_this());
  if (std::this_thread::get_id() != result_thread_id_) wake_result_thread();
}

void pool_core::complete(job& j) {
  j.complete();
  if (--unfinished_ == 0) idle_cv_.notify_all();
}

void pool_core::run_callbacks(const std::vector<std::shared_ptr<job>>& jobs) {
  for (const auto& j : jobs) {
    try {
      j->run_callbacks();
    } catch (const std::exception& e) {
      std::cerr << "multiproc: a Pool callback threw " << demangle(typeid(e).name()) << ": " << e.what()
                << std::endl;
    } catch (...) {
      std::cerr << "multiproc: a Pool callback threw an exception of unknown type" << std::endl;
    }
    std::lock_guard lk(m_);
    complete(*j);
  }
}

void pool_core::fail_everything(errc code, const std::string& message) {
  auto error = error_ptr(code, message);
  while (!pending_.empty()) {
    auto ref = std::move(pending_.front());
    pending_.pop_front();
    fail_chunk(ref, error);
  }
  for (auto& w : workers_) {
    if (!w) continue;
    for (auto& ref : w->inflight) fail_chunk(ref, error);
    in_flight_ -= w->inflight.size();
    w->inflight.clear();
  }
}

void pool_core::wake_result_thread() {
  std::uint64_t one = 1;
  (void)!::write(wake_, &one, sizeof one);
}

// ---- shutdown -----------------------------------------------------------------------------

void pool_core::close() {
  check_owner();
  std::lock_guard lk(m_);
  if (state_ == state::running) {
    state_ = state::closed;
    log(LogLevel::info, "pool closed");
  }
}

void pool_core::terminate() {
  check_owner();
  {
    std::lock_guard lk(m_);
    if (shut_down_) return;
    shut_down_ = true;
    state_ = state::terminated;
    log(LogLevel::info, "pool terminated");
    idle_cv_.notify_all();  // a join() waiting for the tasks returns
  }
  supervisor_.reset();  // no restarts from here on
  std::vector<int> pidfds;
  {
    std::lock_guard lk(m_);
    for (auto& w : workers_)
      if (w) pidfds.push_back(w->pidfd);
  }
  // The ladder: SIGTERM, a short grace, SIGKILL.
  for (int fd : pidfds) pidfd_send_signal(fd, SIGTERM);
  auto deadline = Clock::now() + terminate_grace;
  for (int fd : pidfds) {
    pollfd p{fd, POLLIN, 0};
    if (poll_until(&p, 1, deadline) == 0) pidfd_send_signal(fd, SIGKILL);
  }
  for (int fd : pidfds) try_reap(fd, true);
  {
    std::lock_guard lk(m_);
    fail_everything(errc::process_error, "the pool was terminated before the task finished");
    for (std::size_t slot = 0; slot < workers_.size(); ++slot)
      if (workers_[slot]) remove_worker(slot);
  }
  stop_result_thread();
}

void pool_core::join() {
  check_owner();
  std::unique_lock lk(m_);
  if (state_ == state::running) throw ValueError("Pool is still running: call close() or terminate() before join()");
  idle_cv_.wait(lk, [&] { return shut_down_ || unfinished_ == 0; });
  if (shut_down_) return;
  shut_down_ = true;
  state_ = state::terminated;  // nothing is left to do: from here on join() is a shutdown
  lk.unlock();
  supervisor_.reset();
  std::vector<int> pidfds;
  {
    std::lock_guard guard(m_);
    for (auto& w : workers_) {
      if (!w) continue;
      ::shutdown(w->sock, SHUT_WR);  // EOF: an idle worker exits
      pidfds.push_back(w->pidfd);
    }
  }
  for (int fd : pidfds) try_reap(fd, true);
  {
    std::lock_guard guard(m_);
    for (std::size_t slot = 0; slot < workers_.size(); ++slot)
      if (workers_[slot]) remove_worker(slot);
  }
  stop_result_thread();
}

void pool_core::stop_result_thread() {
  if (!result_thread_.joinable()) return;
  if (std::this_thread::get_id() == result_thread_id_)
    throw ValueError("a Pool callback cannot join or terminate its own pool");
  {
    std::lock_guard lk(m_);
    stopping_ = true;
  }
  wake_result_thread();
  result_thread_.join();
  std::lock_guard lk(m_);
  close_internal(wake_);
  close_internal(epoll_);
}

} // namespace multiproc::detail

namespace multiproc {

Pool::Pool(unsigned processes) : Pool([&] {
  PoolOptions options;
  options.processes = processes;
  return options;
}()) {}

Pool::Pool(PoolOptions options) {
  if (options.processes == 0 && options.nodes.empty()) options.processes = cpu_count();
  core_ = std::make_shared<detail::pool_core>(std::move(options));
  processes_ = static_cast<unsigned>(core_->size());
  try {
    core_->start();
  } catch (...) {
    core_->terminate();
    throw;
  }
}

Pool::~Pool() {
  if (!core_) return;
  if (!core_->owned_here()) {
    // A forked child's copy: the threads and workers it names belong to the parent.
    new std::shared_ptr<detail::pool_core>(std::move(core_));
    return;
  }
  try {
    core_->terminate();
  } catch (const std::exception& e) {
    std::cerr << "multiproc: terminating a Pool failed: " << e.what() << std::endl;
  }
}

void Pool::handover(const std::shared_ptr<detail::submission>& sub, std::string bytes,
                    std::vector<detail::submission::chunk> chunks) {
  core_->handover(sub, std::move(bytes), std::move(chunks));
}
void Pool::seal(detail::submission& sub) { core_->seal(sub); }
void Pool::abandon(detail::submission& sub) { core_->abandon(sub); }
void Pool::close() { core_->close(); }
void Pool::terminate() { core_->terminate(); }
void Pool::join() { core_->join(); }
std::vector<pid_t> Pool::worker_pids() const { return core_->pids(); }

} // namespace multiproc
