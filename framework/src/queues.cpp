#include "multiproc/queues.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "launch.hpp"
#include "multiproc/detail/shm.hpp"
#include "shm_primitives.hpp"

namespace multiproc::detail {

namespace {

// Big enough that one read() drains what a socket buffer holds (~208 KiB by default), so a
// consumer pays one syscall per batch of small items rather than per item.
constexpr std::size_t read_ahead_capacity = 256 * 1024;
constexpr std::size_t keep_batch_capacity = 1024 * 1024;

[[noreturn]] void throw_errno(const char* what, int err) {
  throw OSError(std::string(what) + ": " + std::strerror(err), err);
}

}  // namespace

// What every process holding the queue shares.
struct QueueControl {
  explicit QueueControl(std::size_t max) : maxsize(static_cast<std::int64_t>(max)) {
    init_robust_mutex(read_lock, mutex_kind::normal);
    init_robust_mutex(write_lock, mutex_kind::normal);
  }
  pthread_mutex_t read_lock;           // one consumer at a time reads the socket and the read-ahead
  pthread_mutex_t write_lock;          // one producer at a time writes, so frames never interleave
  const std::int64_t maxsize;          // 0: unbounded
  std::atomic<std::int64_t> count{0};  // items put (counted at put time) and not yet taken
  WaitChannel not_full;
  std::atomic<std::int64_t> unfinished{0};  // JoinableQueue: items put and not yet task_done
  WaitChannel all_done;
  // Bytes read from the socket and not yet handed out, under read_lock: [begin, end).
  std::size_t ahead_begin = 0;
  std::size_t ahead_end = 0;
  char ahead[read_ahead_capacity];
};

struct SocketPair {
  SocketPair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
      throw_errno("creating the queue's socket pair failed", errno);
    reader = fds[0];
    writer = fds[1];
  }
  ~SocketPair() {
    ::close(reader);
    ::close(writer);
  }
  SocketPair(const SocketPair&) = delete;
  SocketPair& operator=(const SocketPair&) = delete;
  int reader;
  int writer;
};

// This process's producer side of a Queue: frames put and not yet written, and the feeder thread
// that writes them in batches. Per process: a forked child gets a fresh one (see
// on_fork_in_child), never its parent's pending frames or thread.
struct Feeder {
  std::mutex m;
  std::condition_variable wake;
  std::string pending;       // framed items, in put order
  bool stopping = false;     // close(): write what is pending, then exit
  std::exception_ptr error;  // a failed write, reported by the next put or join_thread
  std::thread thread;        // started by the first put
  std::mutex join_m;         // one joiner at a time, so every joiner returns after the flush
};

struct QueueCore {
  QueueCore(std::size_t maxsize, queue_kind k)
      : control(make_shared_object<QueueControl>(maxsize)),
        sockets(std::make_shared<SocketPair>()),
        feeder(std::make_shared<Feeder>()),
        kind(k) {}
  ~QueueCore();
  QueueCore(const QueueCore&) = delete;
  QueueCore& operator=(const QueueCore&) = delete;

  std::shared_ptr<QueueControl> control;
  std::shared_ptr<SocketPair> sockets;
  std::shared_ptr<Feeder> feeder;
  const queue_kind kind;
  std::atomic<bool> closed{false};     // in this process
  std::atomic<bool> cancelled{false};  // cancel_join_thread() in this process
};

namespace {

// --- the feeder thread ----------------------------------------------------------------------

void feed(const std::shared_ptr<Feeder>& feeder, const std::shared_ptr<QueueControl>& control,
          const std::shared_ptr<SocketPair>& sockets) {
  // Signals aimed at the process are for the user's threads, not this one.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  Feeder& f = *feeder;
  std::string batch;
  std::unique_lock lock(f.m);
  for (;;) {
    f.wake.wait(lock, [&] { return !f.pending.empty() || f.stopping; });
    if (f.pending.empty()) return;
    batch.swap(f.pending);
    lock.unlock();
    try {
      RobustGuard writing(control->write_lock);
      write_bytes(sockets->writer, batch);
    } catch (...) {
      lock.lock();
      f.error = std::current_exception();
      f.pending.clear();
      return;
    }
    // A burst of big items must not pin its memory for the life of the queue.
    if (batch.capacity() > keep_batch_capacity)
      batch = std::string();
    else
      batch.clear();
    lock.lock();
  }
}

void start_feeder_locked(QueueCore& core) {
  Feeder& f = *core.feeder;
  if (f.thread.joinable()) return;
  f.thread = std::thread(feed, core.feeder, core.control, core.sockets);
}

// Tells the feeder to write what is pending and exit; waits for it unless told not to (then the
// thread finishes on its own: it owns what it uses).
void stop_feeder(Feeder& f, bool wait) {
  {
    std::lock_guard lock(f.m);
    f.stopping = true;
  }
  f.wake.notify_all();
  std::lock_guard joining(f.join_m);
  std::thread thread;
  {
    std::lock_guard lock(f.m);
    thread = std::move(f.thread);
  }
  if (!thread.joinable()) return;
  if (wait)
    thread.join();
  else
    thread.detach();
}

// --- queues alive in this process, for the fork and exit hooks -------------------------------

struct Registry {
  std::mutex m;
  std::vector<std::weak_ptr<QueueCore>> cores;
};

Registry& registry() {
  static auto* r = new Registry;  // never destroyed: used by the exit hook and in children
  return *r;
}

std::vector<std::shared_ptr<QueueCore>> live_cores() {
  std::lock_guard lock(registry().m);
  std::vector<std::shared_ptr<QueueCore>> out;
  for (auto& weak : registry().cores)
    if (auto core = weak.lock()) out.push_back(std::move(core));
  return out;
}

// A child starts with no pending frames and no feeder. The parent's Feeder copy is kept, not
// destroyed: its mutex or condition variable may have been copied mid-use by a parent thread,
// and destroying those (or a std::thread that looks joinable) is undefined or aborts.
void on_fork_in_child() {
  static auto* abandoned = new std::vector<std::shared_ptr<Feeder>>;
  for (auto& core : live_cores()) {
    abandoned->push_back(std::move(core->feeder));
    core->feeder = std::make_shared<Feeder>();
    core->closed = false;
    core->cancelled = false;
  }
}

// Nothing put before a normal exit is lost: every feeder writes what is pending first.
void flush_at_exit() {
  for (auto& core : live_cores()) stop_feeder(*core->feeder, !core->cancelled);
}

void install_hooks() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Keeps the registry consistent across a fork from any thread.
    pthread_atfork([] { registry().m.lock(); }, [] { registry().m.unlock(); }, [] { registry().m.unlock(); });
    on_fork_child(on_fork_in_child);
    at_process_exit(flush_at_exit, 0);
  });
}

void register_core(const std::shared_ptr<QueueCore>& core) {
  install_hooks();
  std::lock_guard lock(registry().m);
  std::erase_if(registry().cores, [](const std::weak_ptr<QueueCore>& w) { return w.expired(); });
  registry().cores.push_back(core);
}

// --- consumer side ---------------------------------------------------------------------------

// Reads what the socket has into the read-ahead, after moving the unread rest to the front.
// Blocks until at least one byte comes: callers know a frame is there or in flight.
void fill(QueueControl& c, int fd) {
  std::size_t unread = c.ahead_end - c.ahead_begin;
  if (c.ahead_begin > 0) std::memmove(c.ahead, c.ahead + c.ahead_begin, unread);
  c.ahead_begin = 0;
  c.ahead_end = unread;
  for (;;) {
    ssize_t n = ::read(fd, c.ahead + c.ahead_end, read_ahead_capacity - c.ahead_end);
    if (n > 0) {
      c.ahead_end += static_cast<std::size_t>(n);
      return;
    }
    if (n == 0) throw EOFError("the queue's socket was closed");
    if (errno != EINTR) throw_errno("reading from the queue failed", errno);
  }
}

// A frame too big for the read-ahead: its start from there, the rest straight from the socket.
std::string take_large(QueueControl& c, int fd, const FrameHeader& h) {
  std::string payload(c.ahead + c.ahead_begin + h.header_size, c.ahead_end - c.ahead_begin - h.header_size);
  c.ahead_begin = c.ahead_end = 0;
  payload += read_payload(fd, h.payload_size - payload.size());
  return payload;
}

// The next item's payload; the caller holds read_lock. nullopt when no byte of a frame arrived
// by the deadline. Once a frame has begun it is read whole, whatever the deadline: its bytes
// are already out of the socket, and dropping them would lose the item.
std::optional<std::string> take_frame(QueueControl& c, int fd, Deadline deadline) {
  for (;;) {
    std::string_view ahead(c.ahead + c.ahead_begin, c.ahead_end - c.ahead_begin);
    if (ahead.empty()) {
      if (!wait_readable(fd, deadline)) return std::nullopt;
      fill(c, fd);
      continue;
    }
    auto h = parse_frame_header(ahead);
    if (h) {
      std::size_t total = h->header_size + h->payload_size;
      if (ahead.size() >= total) {
        std::string payload(ahead.substr(h->header_size, h->payload_size));
        c.ahead_begin += total;
        return payload;
      }
      if (total > read_ahead_capacity) return take_large(c, fd, *h);
    }
    fill(c, fd);
  }
}

struct Unlock {
  pthread_mutex_t& m;
  ~Unlock() { unlock_robust(m); }
};

bool try_reserve_slot(QueueControl& c) {
  auto n = c.count.load();
  while (n < c.maxsize)
    if (c.count.compare_exchange_weak(n, n + 1)) return true;
  return false;
}

// Counts the item in before it is sent, so that maxsize holds across processes and qsize()
// includes items still in a feeder. false when the queue stayed full until the deadline.
bool reserve_slot(QueueCore& core, Deadline deadline) {
  QueueControl& c = *core.control;
  if (c.maxsize == 0)
    c.count.fetch_add(1);
  else if (!wait_for_claim(
               c.not_full, [&] { return try_reserve_slot(c); }, deadline))
    return false;
  if (core.kind == queue_kind::joinable) c.unfinished.fetch_add(1);
  return true;
}

// A taken item (or a put that failed) frees its slot.
void free_slot(QueueControl& c) {
  c.count.fetch_sub(1);
  if (c.maxsize != 0) c.not_full.notify();
}

void cancel_slot(QueueCore& core) {
  if (core.kind == queue_kind::joinable) core.control->unfinished.fetch_sub(1);
  free_slot(*core.control);
}

void rethrow_feeder_error(Feeder& f) {
  if (f.error) std::rethrow_exception(f.error);
}

// SimpleQueue writes the frame now; the others hand it to this process's feeder.
void deliver(QueueCore& core, std::string_view packed) {
  if (core.kind == queue_kind::simple) {
    RobustGuard writing(core.control->write_lock);
    write_frame(core.sockets->writer, packed);
    return;
  }
  Feeder& f = *core.feeder;
  bool was_idle;
  {
    std::lock_guard lock(f.m);
    rethrow_feeder_error(f);
    // Stopped by close() in another thread, or by the exit flush.
    if (f.stopping) throw ValueError("queue.put: the queue is closed");
    start_feeder_locked(core);
    was_idle = f.pending.empty();
    append_frame(f.pending, packed);
  }
  if (was_idle) f.wake.notify_one();
}

QueueCore& open_core(const std::shared_ptr<QueueCore>& core, const char* op) {
  if (core->closed) throw ValueError(std::string("queue.") + op + ": the queue is closed");
  return *core;
}

}  // namespace

QueueCore::~QueueCore() { stop_feeder(*feeder, !cancelled); }

// --- QueueChannel ------------------------------------------------------------------------------

QueueChannel::QueueChannel(std::size_t maxsize, queue_kind kind)
    : core_(std::make_shared<QueueCore>(maxsize, kind)) {
  register_core(core_);
}

bool QueueChannel::put(std::string_view packed, Deadline deadline) {
  QueueCore& core = open_core(core_, "put");
  if (!reserve_slot(core, deadline)) return false;
  try {
    deliver(core, packed);
  } catch (...) {
    cancel_slot(core);
    throw;
  }
  return true;
}

std::optional<std::string> QueueChannel::get(Deadline deadline) {
  QueueCore& core = open_core(core_, "get");
  QueueControl& c = *core.control;
  if (lock_robust(c.read_lock, deadline) != lock_result::acquired) return std::nullopt;
  std::optional<std::string> payload;
  {
    Unlock reading{c.read_lock};
    payload = take_frame(c, core.sockets->reader, deadline);
  }
  if (payload) free_slot(c);
  return payload;
}

std::size_t QueueChannel::qsize() const {
  auto n = core_->control->count.load();
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

bool QueueChannel::empty() const { return core_->control->count.load() <= 0; }

bool QueueChannel::full() const {
  const QueueControl& c = *core_->control;
  return c.maxsize != 0 && c.count.load() >= c.maxsize;
}

void QueueChannel::close() {
  if (core_->closed.exchange(true)) return;
  Feeder& f = *core_->feeder;
  {
    std::lock_guard lock(f.m);
    f.stopping = true;
  }
  f.wake.notify_all();
}

void QueueChannel::join_thread() {
  if (!core_->closed) throw ValueError("queue.join_thread: call close() first");
  stop_feeder(*core_->feeder, true);
  std::lock_guard lock(core_->feeder->m);
  rethrow_feeder_error(*core_->feeder);
}

void QueueChannel::cancel_join_thread() { core_->cancelled = true; }

void QueueChannel::task_done() {
  QueueControl& c = *core_->control;
  auto n = c.unfinished.load();
  do {
    if (n <= 0) throw ValueError("task_done() called more times than there were items put");
  } while (!c.unfinished.compare_exchange_weak(n, n - 1));
  if (n == 1) c.all_done.notify();
}

bool QueueChannel::join(Deadline deadline) {
  QueueControl& c = *core_->control;
  return wait_for_claim(
      c.all_done, [&] { return c.unfinished.load() == 0; }, deadline);
}

}  // namespace multiproc::detail
