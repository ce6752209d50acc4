#include "multiproc/queues.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "launch.hpp"
#include "multiproc/detail/shm.hpp"
#include "shm_primitives.hpp"

// How a queue survives a process killed at any instant
// ----------------------------------------------------
// Items travel in records on a SOCK_SEQPACKET socket pair: a record is a batch of small items, or
// the handle (a memfd) of one large item. The kernel queues a record whole or not at all, and a
// reader takes it whole, so no death can leave a partial record for others to misread.
//
// Every process that uses the queue owns a member slot in the shared control block, and holds a
// POSIX record lock on the slot's byte of a small memfd for as long as it lives: the kernel drops
// the lock when the process ends, however it ends. A lock that can be taken marks a dead owner,
// and taking it makes the taker the one to clean up after it (reclaim).
//
// Counts are per member and only grow, so no step ever has to update two of them together:
// qsize = sum(reserved - written_off) - sum(got); a JoinableQueue's unfinished count is
// sum(reserved - written_off) - sum(done) - sum(held_off). A dead producer's items that the
// kernel never took are written off; the one record it may have been sending is "pending" in its
// send word until the kernel has it, and whoever comes first settles it: its sender, the consumer
// that receives it (delivered), or the reclaimer (void: dropped if it ever arrives).
//
// Consumers share one read-ahead buffer (the rest of the last record) under read_lock. Each of
// their steps is journaled in the control block; a consumer that dies mid-step leaves the journal
// set, and the next one to take read_lock finishes or undoes the step (recover_reader).

namespace multiproc::detail {

namespace {

// 64 KiB keeps three records in flight within the default socket send buffer (208 KiB), which a
// record may not exceed.
constexpr std::size_t record_capacity = 64 * 1024;
constexpr std::size_t keep_batch_capacity = 1024 * 1024;
constexpr std::size_t max_members = 1024;
// How often a wait that other processes must end (a full queue, join) looks for dead ones.
constexpr auto liveness_poll = std::chrono::milliseconds(100);

struct RecordHeader {
  std::uint32_t size;    // of the whole record, header and trailer included
  std::uint32_t items;   // small items in the record; large_item: one item, in the attached memfd
  std::uint32_t member;  // the sender's member slot
  std::uint32_t tag;     // QueueControl::next_tag when it was sent; the trailer repeats it
};
constexpr std::uint32_t large_item = 0x8000'0000u;
constexpr std::size_t header_size = sizeof(RecordHeader);
constexpr std::size_t trailer_size = sizeof(std::uint32_t);
constexpr std::size_t item_prefix = sizeof(std::uint32_t);  // each small item: its length, native
constexpr std::size_t record_room = record_capacity - header_size - trailer_size;
constexpr std::uint32_t max_items_per_record = (1u << 14) - 1;  // fits SendWord::pending

[[noreturn]] void throw_errno(const char* what, int err) {
  throw OSError(std::string(what) + ": " + std::strerror(err), err);
}

// A member's send word: how many of its items the kernel has taken (mod 2^32), and the record it
// may be sending now — its item count and the low bits of its tag — or, once its sender died
// before that record was settled, the record marked void.
struct SendWord {
  static constexpr int tag_bits = 17;
  static constexpr std::uint32_t tag_mask = (1u << tag_bits) - 1;

  std::uint32_t sent = 0;
  std::uint32_t pending = 0;  // items of the record being sent; 0: none
  std::uint32_t tag = 0;
  bool voided = false;

  std::uint64_t pack() const {
    return std::uint64_t{sent} | std::uint64_t{pending} << 32 | std::uint64_t{voided} << 46 |
           std::uint64_t{tag & tag_mask} << 47;
  }
  static SendWord unpack(std::uint64_t w) {
    return {static_cast<std::uint32_t>(w), static_cast<std::uint32_t>(w >> 32) & 0x3fffu,
            static_cast<std::uint32_t>(w >> 47), ((w >> 46) & 1u) != 0};
  }
  bool names(std::uint32_t full_tag) const { return (pending != 0 || voided) && tag == (full_tag & tag_mask); }
};

enum : std::uint32_t { member_free = 0, member_active = 1 };

// One process's share of a queue. Its counters carry on across owners of the slot.
struct alignas(64) Member {
  std::atomic<std::uint32_t> state{member_free};
  std::atomic<std::int32_t> pid{0};
  std::atomic<std::uint32_t> sending_tag{0};  // full tag of the pending record
  std::atomic<std::uint32_t> void_tag{0};     // full tag of the voided record
  std::atomic<std::uint64_t> send{0};         // SendWord
  std::atomic<std::uint64_t> reserved{0};     // items put
  std::atomic<std::uint64_t> written_off{0};  // items put that will never arrive
  std::atomic<std::uint64_t> got{0};          // items taken by get()
  std::atomic<std::uint64_t> done{0};         // task_done() calls
  std::atomic<std::uint64_t> held_off{0};     // items got and never done: the owner died
};
static_assert(sizeof(Member) == 64);

enum : std::uint32_t { reader_idle = 0, reader_receiving = 1, reader_taking = 2 };

}  // namespace

// What every process holding the queue shares.
struct QueueControl {
  explicit QueueControl(std::size_t max) : maxsize(static_cast<std::int64_t>(max)) {
    for (auto* m : {&read_lock, &write_lock, &admit_lock, &done_lock}) init_robust_mutex(*m, mutex_kind::normal);
  }
  pthread_mutex_t read_lock;   // one consumer at a time: the socket's read side and the read-ahead
  pthread_mutex_t write_lock;  // one sender at a time, so that records go out in tag order
  pthread_mutex_t admit_lock;  // bounded queues: the check against maxsize with the reservation
  pthread_mutex_t done_lock;   // JoinableQueue: task_done's check with its count
  const std::int64_t maxsize;  // 0: unbounded
  WaitChannel not_full;
  WaitChannel all_done;
  std::uint32_t next_tag = 1;                // under write_lock
  std::atomic<std::uint32_t> voids{0};       // members with a voided record (a hint; may run high)
  std::atomic<std::uint32_t> high_water{0};  // members [0, high_water) were ever claimed
  // JoinableQueue: the last consumer found dead holding items, published by death_seq.
  std::atomic<std::int32_t> death_pid{0};
  std::atomic<std::uint64_t> death_held{0};
  std::atomic<std::uint32_t> death_seq{0};
  std::atomic<std::uint32_t> deaths_reported{0};
  // The consumer journal and the read-ahead, under read_lock. Stores are ordered (release): a
  // consumer may die between any two of them.
  std::atomic<std::uint32_t> phase{reader_idle};
  std::atomic<std::uint32_t> reader{0};  // member of the consumer in the step
  std::atomic<std::uint64_t> got_before{0};
  std::atomic<std::uint32_t> begin_before{0};
  std::atomic<std::uint32_t> ahead_begin{0};  // unread items of the last record: [begin, end)
  std::atomic<std::uint32_t> ahead_end{0};
  alignas(64) char ahead[record_capacity];
  Member members[max_members];
};

struct QueueFds {
  QueueFds() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
      throw_errno("creating the queue's socket pair failed", errno);
    reader = fds[0];
    writer = fds[1];
    members = ::memfd_create("multiproc-queue-members", MFD_CLOEXEC);
    if (members < 0) {
      int err = errno;
      ::close(reader);
      ::close(writer);
      throw_errno("creating the queue's member locks failed", err);
    }
    // A record must fit the send buffer; some systems default to less than two records.
    int sndbuf = 0;
    socklen_t len = sizeof sndbuf;
    if (::getsockopt(writer, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0 &&
        static_cast<std::size_t>(sndbuf) < 2 * record_capacity) {
      int want = 2 * record_capacity;
      ::setsockopt(writer, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
    }
  }
  // The descriptors of a queue made in another process (owned from here on).
  QueueFds(int r, int w, int m) : reader(r), writer(w), members(m) {}
  ~QueueFds() {
    // Closing the members file drops this process's member lock: others may clean up after it.
    ::close(reader);
    ::close(writer);
    ::close(members);
    for (int fd : aliases) ::close(fd);
  }
  QueueFds(const QueueFds&) = delete;
  QueueFds& operator=(const QueueFds&) = delete;
  int reader;
  int writer;
  int members;  // only its record locks are used
  std::mutex aliases_m;
  std::vector<int> aliases;  // more descriptors of the members file, received (see adopt_alias)
};

// This process's producer side of a Queue: items put and not yet sent, and the feeder thread that
// sends them in records. Per process: a forked child gets a fresh one (see on_fork_in_child),
// never its parent's pending items or thread.
struct Feeder {
  std::mutex m;
  std::condition_variable wake;
  std::string pending;       // items in put order, each as its 8-byte length and payload
  bool stopping = false;     // close(): send what is pending, then exit
  std::exception_ptr error;  // a failed send, reported by the next put or join_thread
  std::thread thread;        // started by the first put
  std::mutex join_m;         // one joiner at a time, so every joiner returns after the flush
};

// This process's member slot; a forked child gets a fresh one.
struct Membership {
  std::mutex m;  // claims and clean-ups of this process, one at a time
  std::atomic<int> index{-1};
};

struct QueueCore {
  QueueCore(std::size_t maxsize, queue_kind k)
      : QueueCore(make_shared_object<QueueControl>(maxsize), std::make_shared<QueueFds>(), k) {}
  // This process's side of a queue whose shared parts exist: no pending items, no member slot yet.
  QueueCore(std::shared_ptr<QueueControl> c, std::shared_ptr<QueueFds> f, queue_kind k)
      : control(std::move(c)),
        fds(std::move(f)),
        feeder(std::make_shared<Feeder>()),
        membership(std::make_shared<Membership>()),
        kind(k) {}
  ~QueueCore();
  QueueCore(const QueueCore&) = delete;
  QueueCore& operator=(const QueueCore&) = delete;

  std::shared_ptr<QueueControl> control;
  std::shared_ptr<QueueFds> fds;
  std::shared_ptr<Feeder> feeder;
  std::shared_ptr<Membership> membership;
  const queue_kind kind;
  std::atomic<bool> closed{false};     // in this process
  std::atomic<bool> cancelled{false};  // cancel_join_thread() in this process
};

namespace {

// --- member slots -------------------------------------------------------------------------------

bool lock_member_byte(int fd, std::size_t i, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(i);
  fl.l_len = 1;
  for (;;) {
    if (::fcntl(fd, F_SETLK, &fl) == 0) return true;
    if (errno == EAGAIN || errno == EACCES) return false;
    if (errno != EINTR) throw_errno("locking a queue member slot failed", errno);
  }
}
// false: a live process owns slot i. Within one process the lock is always granted.
bool try_lock_member(int fd, std::size_t i) { return lock_member_byte(fd, i, F_WRLCK); }
void unlock_member(int fd, std::size_t i) { lock_member_byte(fd, i, F_UNLCK); }

std::size_t members_in_use(const QueueControl& c) {
  return std::min<std::size_t>(c.high_water.load(), max_members);
}

std::uint64_t sent_total(const Member& m) {
  // reserved - sent < 2^32: fewer items than that are ever in flight or lost.
  auto reserved = m.reserved.load();
  auto unsent = static_cast<std::uint32_t>(static_cast<std::uint32_t>(reserved) - SendWord::unpack(m.send.load()).sent);
  return reserved - unsent;
}

struct Unlock {
  pthread_mutex_t& m;
  ~Unlock() { unlock_robust(m); }
};

// --- settling records ---------------------------------------------------------------------------

// A member's voided record can no longer arrive: forget it, so that the slot can be reused.
void clear_void(QueueControl& c, Member& m, std::uint64_t raw) {
  auto w = SendWord::unpack(raw);
  if (m.send.compare_exchange_strong(raw, SendWord{w.sent, 0, 0, false}.pack())) c.voids.fetch_sub(1);
}

// Records go out in tag order, under write_lock: once a record tagged `tag` has arrived, a voided
// record with an earlier tag was never sent (had it been, it would have arrived and been settled).
void clear_voids_before(QueueControl& c, std::uint32_t tag) {
  for (std::size_t i = 0, n = members_in_use(c); i < n; ++i) {
    Member& m = c.members[i];
    auto raw = m.send.load();
    if (SendWord::unpack(raw).voided && static_cast<std::int32_t>(tag - m.void_tag.load()) > 0)
      clear_void(c, m, raw);
  }
}

// The caller holds read_lock and found the socket empty: voids marked before it looked were never
// sent.
void clear_voids_if_drained(QueueCore& core) {
  QueueControl& c = *core.control;
  if (c.voids.load() == 0) return;
  std::vector<std::pair<std::size_t, std::uint64_t>> seen;
  for (std::size_t i = 0, n = members_in_use(c); i < n; ++i) {
    auto raw = c.members[i].send.load();
    if (SendWord::unpack(raw).voided) seen.emplace_back(i, raw);
  }
  pollfd p{core.fds->reader, POLLIN, 0};
  if (::poll(&p, 1, 0) != 0) return;
  for (auto [i, raw] : seen) clear_void(c, c.members[i], raw);
}

// A record arrived. It counts as sent unless its sender died before saying so and the record was
// voided by whoever cleaned up after it: then its items were written off, and it is dropped.
bool settle(QueueControl& c, const RecordHeader& h) {
  bool accepted = true;
  Member& m = c.members[h.member];
  auto raw = m.send.load();
  for (;;) {
    auto w = SendWord::unpack(raw);
    if (!w.names(h.tag)) break;  // its sender settled it already
    SendWord settled{w.voided ? w.sent : w.sent + w.pending, 0, 0, false};
    if (m.send.compare_exchange_weak(raw, settled.pack())) {
      if (w.voided) {
        accepted = false;
        c.voids.fetch_sub(1);
      }
      break;
    }
  }
  if (c.voids.load() != 0) clear_voids_before(c, h.tag);
  return accepted;
}

// --- the consumer journal -----------------------------------------------------------------------

// The record in the read-ahead, if the kernel handed it over whole (a reader killed inside
// recvmsg may have got all of it, none of it, or — on a fault — a prefix).
std::optional<RecordHeader> received_record(const QueueControl& c) {
  RecordHeader h;
  std::memcpy(&h, c.ahead, header_size);
  if (h.size < header_size + trailer_size || h.size > record_capacity || h.member >= max_members) return std::nullopt;
  std::uint32_t trailer;
  std::memcpy(&trailer, c.ahead + h.size - trailer_size, trailer_size);
  if (trailer != h.tag) return std::nullopt;
  return h;
}

void publish_small_items(QueueControl& c, const RecordHeader& h) {
  c.ahead_begin.store(header_size, std::memory_order_release);
  c.ahead_end.store(h.size - trailer_size, std::memory_order_release);
}

void empty_ahead(QueueControl& c) {
  c.ahead_begin.store(0, std::memory_order_release);
  c.ahead_end.store(0, std::memory_order_release);
}

// Finishes or undoes the step of a consumer that died holding read_lock; the caller holds it now.
void recover_reader(QueueControl& c) {
  auto phase = c.phase.load();
  if (phase == reader_idle) return;
  Member& dead = c.members[c.reader.load()];
  std::uint64_t got = c.got_before.load();
  if (phase == reader_taking) {
    if (c.ahead_begin.load() != c.begin_before.load()) ++got;
  } else if (auto h = received_record(c); h && settle(c, *h)) {
    if (h->items & large_item)
      ++got;  // its memfd went with the dead consumer: the item it was getting is lost
    else
      publish_small_items(c, *h);
  } else {
    empty_ahead(c);
  }
  dead.got.store(got, std::memory_order_release);
  c.phase.store(reader_idle, std::memory_order_release);
}

// A dead member's `got` is final once no consumer step of it is left to recover. false: a live
// consumer has just taken read_lock over from it and is recovering it.
bool reader_recovered(QueueControl& c, std::size_t i) {
  if (c.phase.load() == reader_idle || c.reader.load() != i) return true;
  if (try_lock_robust(c.read_lock) != lock_result::acquired) return false;
  Unlock unlocking{c.read_lock};
  recover_reader(c);
  return true;
}

// --- cleaning up after dead processes -----------------------------------------------------------

void void_pending_record(QueueControl& c, Member& m) {
  auto raw = m.send.load();
  for (;;) {
    auto w = SendWord::unpack(raw);
    if (w.pending == 0 || w.voided) return;
    m.void_tag.store(m.sending_tag.load());
    c.voids.fetch_add(1);
    if (m.send.compare_exchange_strong(raw, SendWord{w.sent, 0, w.tag, true}.pack())) return;
    c.voids.fetch_sub(1);  // a consumer settled it meanwhile
  }
}

// JoinableQueue: items the dead member got and never marked done can never be; they are written
// off, and the death is published for join() to report. Published first: a cleaner that dies in
// between reports it twice, never not at all.
void write_off_held(QueueControl& c, Member& m) {
  auto held = static_cast<std::int64_t>(m.got.load() - m.done.load());
  auto before = static_cast<std::int64_t>(m.held_off.load());
  if (held <= before) return;
  c.death_pid.store(m.pid.load());
  c.death_held.store(static_cast<std::uint64_t>(held - before));
  c.death_seq.fetch_add(1);
  m.held_off.store(static_cast<std::uint64_t>(held));
}

// Cleans up after the dead owner of slot i; the caller holds the slot's lock. Every step may be
// repeated by another cleaner if this one dies. false: not yet (see reader_recovered).
bool reclaim(QueueCore& core, std::size_t i) {
  QueueControl& c = *core.control;
  Member& m = c.members[i];
  if (!reader_recovered(c, i)) return false;
  void_pending_record(c, m);
  m.written_off.store(m.reserved.load() - sent_total(m));
  if (core.kind == queue_kind::joinable) write_off_held(c, m);
  m.state.store(member_free);
  if (c.maxsize != 0) c.not_full.notify();
  c.all_done.notify();
  return true;
}

// Cleans up after every member whose owner died.
void reclaim_dead(QueueCore& core) {
  QueueControl& c = *core.control;
  std::lock_guard lock(core.membership->m);
  int mine = core.membership->index.load();
  for (std::size_t i = 0, n = members_in_use(c); i < n; ++i) {
    if (static_cast<int>(i) == mine || c.members[i].state.load() != member_active) continue;
    if (!try_lock_member(core.fds->members, i)) continue;
    if (c.members[i].state.load() == member_active) reclaim(core, i);
    unlock_member(core.fds->members, i);
  }
}

std::size_t claim_member(QueueCore& core) {
  QueueControl& c = *core.control;
  int fd = core.fds->members;
  for (std::size_t i = 0; i < max_members; ++i) {
    Member& m = c.members[i];
    if (SendWord::unpack(m.send.load()).voided || !try_lock_member(fd, i)) continue;
    bool usable = (m.state.load() == member_free || reclaim(core, i)) && !SendWord::unpack(m.send.load()).voided;
    if (!usable) {
      unlock_member(fd, i);
      continue;
    }
    m.pid.store(::getpid());
    m.state.store(member_active);
    auto hw = c.high_water.load();
    while (hw < i + 1 && !c.high_water.compare_exchange_weak(hw, static_cast<std::uint32_t>(i + 1))) {
    }
    return i;
  }
  throw OSError("queue: more than " + std::to_string(max_members) + " processes use this queue at once", EUSERS);
}

// This process's member slot, claimed on first use.
std::size_t my_member(QueueCore& core) {
  Membership& ms = *core.membership;
  int i = ms.index.load(std::memory_order_acquire);
  if (i >= 0) return static_cast<std::size_t>(i);
  std::lock_guard lock(ms.m);
  i = ms.index.load();
  if (i < 0) {
    i = static_cast<int>(claim_member(core));
    ms.index.store(i, std::memory_order_release);
  }
  return static_cast<std::size_t>(i);
}

// --- sums over members --------------------------------------------------------------------------
// Terms that are subtracted are read before those that are added: as every count only grows, a
// sum read while others change is never below the true value at the end of the read (never a
// false "empty" or "all done"), and a bounded queue never admits past maxsize.

template <class Out>
std::int64_t sum_members(const QueueControl& c, Out out) {
  std::size_t n = members_in_use(c);
  std::uint64_t taken = 0, off = 0, put = 0;
  for (std::size_t i = 0; i < n; ++i) taken += out(c.members[i]);
  for (std::size_t i = 0; i < n; ++i) off += c.members[i].written_off.load();
  for (std::size_t i = 0; i < n; ++i) put += c.members[i].reserved.load();
  return static_cast<std::int64_t>(put - off - taken);
}

std::int64_t items_in_queue(const QueueControl& c) {
  return sum_members(c, [](const Member& m) { return m.got.load(); });
}

std::int64_t unfinished_items(const QueueControl& c) {
  return sum_members(c, [](const Member& m) { return m.done.load() + m.held_off.load(); });
}

// --- sending records ----------------------------------------------------------------------------

struct Sender {
  QueueControl& c;
  int fd;
  std::size_t member;
};

void send_all(int fd, msghdr& msg) {
  for (;;) {
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n >= 0) return;
    if (errno == EINTR) continue;  // nothing of a record is sent before all of it is
    if (errno == ETOOMANYREFS) {   // too many large items in flight: wait for consumers
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    if (errno == EPIPE) throw BrokenPipeError("queue: the socket was closed", EPIPE);
    throw_errno("sending to the queue failed", errno);
  }
}

// The member's previous record went out before its sender released write_lock, which the caller
// holds now: settle it if nobody has yet (another thread of this process may be about to).
SendWord settle_previous(Member& m) {
  auto raw = m.send.load();
  for (;;) {
    auto w = SendWord::unpack(raw);
    if (w.pending == 0) return w;
    SendWord settled{w.sent + w.pending, 0, 0, false};
    if (m.send.compare_exchange_weak(raw, settled.pack())) return settled;
  }
}

// Sends one record of `items` items (body: the parts). Until the kernel has it, the member's send
// word names it pending; then its items count as sent. A sender that dies in between leaves it
// pending, and reclaim() voids it.
void send_record(const Sender& s, std::uint32_t items, std::initializer_list<std::string_view> body,
                 int attached_fd = -1) {
  Member& m = s.c.members[s.member];
  RecordHeader h{static_cast<std::uint32_t>(header_size + trailer_size), items, static_cast<std::uint32_t>(s.member), 0};
  std::array<iovec, 4> iov{};
  std::size_t n = 1;
  for (auto part : body) {
    iov[n++] = {const_cast<char*>(part.data()), part.size()};
    h.size += static_cast<std::uint32_t>(part.size());
  }
  iov[0] = {&h, header_size};
  iov[n++] = {&h.tag, trailer_size};
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = n;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (attached_fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &attached_fd, sizeof(int));
  }
  std::uint32_t count = (items & large_item) ? 1 : items;
  SendWord before, pending;
  {
    RobustGuard writing(s.c.write_lock);
    before = settle_previous(m);
    h.tag = s.c.next_tag++;
    pending = SendWord{before.sent, count, h.tag, false};
    m.sending_tag.store(h.tag, std::memory_order_release);
    m.send.store(pending.pack(), std::memory_order_release);
    try {
      send_all(s.fd, msg);
    } catch (...) {
      m.send.store(before.pack());
      throw;
    }
  }
  auto raw = pending.pack();
  m.send.compare_exchange_strong(raw, SendWord{before.sent + count, 0, 0, false}.pack());
}

class MemFd {
public:
  explicit MemFd(int fd) : fd_(fd) {}
  ~MemFd() { ::close(fd_); }
  MemFd(const MemFd&) = delete;
  MemFd& operator=(const MemFd&) = delete;
  int get() const { return fd_; }

private:
  int fd_;
};

// An item too big for a record travels as a memfd holding its payload: one record still, whole
// or nothing, whoever dies when.
void send_large(const Sender& s, std::string_view payload) {
  MemFd item(::memfd_create("multiproc-queue-item", MFD_CLOEXEC));
  if (item.get() < 0) throw_errno("queue: creating the memfd for a large item failed", errno);
  for (std::size_t off = 0; off < payload.size();) {
    ssize_t n = ::write(item.get(), payload.data() + off, payload.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("queue: writing a large item to its memfd failed", errno);
    off += static_cast<std::size_t>(n);
  }
  std::uint64_t size = payload.size();
  send_record(s, large_item, {std::string_view(reinterpret_cast<const char*>(&size), sizeof size)}, item.get());
}

// Pending items are framed as in a record — a 4-byte native length, then the payload — so that a
// run of small ones is sent as it is. A large one has the length large_prefix and an 8-byte
// length after it.
constexpr std::uint32_t large_prefix = 0xffffffffu;

bool is_large(std::size_t payload_size) { return payload_size > record_room - item_prefix; }

void append_item(std::string& out, std::string_view payload) {
  if (is_large(payload.size())) {
    std::uint64_t n = payload.size();
    out.append(reinterpret_cast<const char*>(&large_prefix), sizeof large_prefix);
    out.append(reinterpret_cast<const char*>(&n), sizeof n);
  } else {
    auto n = static_cast<std::uint32_t>(payload.size());
    out.append(reinterpret_cast<const char*>(&n), sizeof n);
  }
  out.append(payload);
}

struct PendingItem {
  std::size_t prefix;  // bytes before the payload
  std::size_t size;    // of the payload
  bool large() const { return prefix != item_prefix; }
};

PendingItem pending_item(std::string_view pending, std::size_t pos) {
  std::uint32_t n;
  std::memcpy(&n, pending.data() + pos, sizeof n);
  if (n != large_prefix) return {item_prefix, n};
  std::uint64_t big;
  std::memcpy(&big, pending.data() + pos + sizeof n, sizeof big);
  return {item_prefix + sizeof big, big};
}

// Sends a batch of pending items in order: runs of small ones as records of up to
// record_capacity, each large one on its own. `sent_upto` follows what the kernel has taken, so
// that a failure knows which items were not sent.
void send_batch(const Sender& s, std::string_view batch, std::size_t& sent_upto) {
  std::size_t pos = 0;
  std::uint32_t items = 0;  // small items in [sent_upto, pos)
  auto flush = [&] {
    if (items != 0) send_record(s, items, {batch.substr(sent_upto, pos - sent_upto)});
    items = 0;
    sent_upto = pos;
  };
  while (pos < batch.size()) {
    auto item = pending_item(batch, pos);
    std::size_t end = pos + item.prefix + item.size;
    if (item.large()) {
      flush();
      send_large(s, batch.substr(pos + item.prefix, item.size));
      pos = sent_upto = end;
      continue;
    }
    if (items == max_items_per_record || end - sent_upto > record_room) flush();
    pos = end;
    ++items;
  }
  flush();
}

std::uint64_t count_items(std::string_view pending, std::size_t from) {
  std::uint64_t count = 0;
  for (std::size_t pos = from; pos < pending.size(); ++count) {
    auto item = pending_item(pending, pos);
    pos += item.prefix + item.size;
  }
  return count;
}

// --- the feeder thread --------------------------------------------------------------------------

void feed(const std::shared_ptr<Feeder>& feeder, const std::shared_ptr<QueueControl>& control,
          const std::shared_ptr<QueueFds>& fds, std::size_t member) {
  // Signals aimed at the process are for the user's threads, not this one.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  Feeder& f = *feeder;
  Sender sender{*control, fds->writer, member};
  std::string batch;
  std::unique_lock lock(f.m);
  for (;;) {
    f.wake.wait(lock, [&] { return !f.pending.empty() || f.stopping; });
    if (f.pending.empty()) return;
    batch.swap(f.pending);
    lock.unlock();
    std::size_t sent_upto = 0;
    try {
      send_batch(sender, batch, sent_upto);
    } catch (...) {
      lock.lock();
      f.error = std::current_exception();
      // What was not sent will never be: it leaves qsize now.
      control->members[member].written_off.fetch_add(count_items(batch, sent_upto) + count_items(f.pending, 0));
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

void start_feeder_locked(QueueCore& core, std::size_t member) {
  Feeder& f = *core.feeder;
  if (f.thread.joinable()) return;
  f.thread = std::thread(feed, core.feeder, core.control, core.fds, member);
}

// Tells the feeder to send what is pending and exit; waits for it unless told not to (then the
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

// A child starts with no pending items, no feeder and no member slot (record locks are not
// inherited). The parent's copies are kept, not destroyed: their mutexes or condition variable
// may have been copied mid-use by a parent thread, and destroying those (or a std::thread that
// looks joinable) is undefined or aborts.
void on_fork_in_child() {
  static auto* abandoned_feeders = new std::vector<std::shared_ptr<Feeder>>;
  static auto* abandoned_memberships = new std::vector<std::shared_ptr<Membership>>;
  for (auto& core : live_cores()) {
    abandoned_feeders->push_back(std::move(core->feeder));
    abandoned_memberships->push_back(std::move(core->membership));
    core->feeder = std::make_shared<Feeder>();
    core->membership = std::make_shared<Membership>();
    core->closed = false;
    core->cancelled = false;
  }
}

// Nothing put before a normal exit is lost: every feeder sends what is pending first.
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

// A queue this process holds already (received twice) is the same core. Closing any descriptor of
// its members file would drop this process's member lock, so the received one stays open with
// that core (as an alias); fd is taken only when this returns a core.
std::shared_ptr<QueueCore> adopt_alias(int fd) {
  struct stat wanted {};
  if (::fstat(fd, &wanted) != 0) {
    int err = errno;
    ::close(fd);
    throw_errno("inspecting a received queue failed", err);
  }
  for (auto& core : live_cores()) {
    struct stat st {};
    if (::fstat(core->fds->members, &st) == 0 && st.st_dev == wanted.st_dev && st.st_ino == wanted.st_ino) {
      std::lock_guard lock(core->fds->aliases_m);
      core->fds->aliases.push_back(fd);
      return core;
    }
  }
  return nullptr;
}

// --- waits on other processes -------------------------------------------------------------------

// Waits on `channel` until try_claim() succeeds, looking for dead processes every liveness_poll
// (their slots and items may be what the wait is for). false at the deadline.
template <class TryClaim>
bool wait_watching_the_dead(QueueCore& core, WaitChannel& channel, TryClaim try_claim, Deadline deadline) {
  for (;;) {
    auto slice = Clock::now() + liveness_poll;
    bool last = deadline && *deadline <= slice;
    if (wait_for_claim(channel, try_claim, last ? deadline : Deadline(slice))) return true;
    if (last) return false;
    reclaim_dead(core);
  }
}

// --- producer side ------------------------------------------------------------------------------

bool try_admit(QueueControl& c, Member& me) {
  RobustGuard admitting(c.admit_lock);
  if (items_in_queue(c) >= c.maxsize) return false;
  me.reserved.fetch_add(1);
  return true;
}

// Counts the item in before it is sent, so that maxsize holds across processes and qsize()
// includes items still in a feeder. false when the queue stayed full until the deadline.
bool reserve(QueueCore& core, Member& me, Deadline deadline) {
  QueueControl& c = *core.control;
  if (c.maxsize == 0) {
    me.reserved.fetch_add(1);
    return true;
  }
  if (try_admit(c, me)) return true;
  reclaim_dead(core);
  return wait_watching_the_dead(core, c.not_full, [&] { return try_admit(c, me); }, deadline);
}

void rethrow_feeder_error(Feeder& f) {
  if (f.error) std::rethrow_exception(f.error);
}

// SimpleQueue sends the item now; the others hand it to this process's feeder.
void deliver(QueueCore& core, std::size_t member, std::string_view packed) {
  if (core.kind == queue_kind::simple) {
    Sender sender{*core.control, core.fds->writer, member};
    if (is_large(packed.size())) {
      send_large(sender, packed);
    } else {
      auto n = static_cast<std::uint32_t>(packed.size());
      send_record(sender, 1, {std::string_view(reinterpret_cast<const char*>(&n), sizeof n), packed});
    }
    return;
  }
  Feeder& f = *core.feeder;
  bool was_idle;
  {
    std::lock_guard lock(f.m);
    rethrow_feeder_error(f);
    // Stopped by close() in another thread, or by the exit flush.
    if (f.stopping) throw ValueError("queue.put: the queue is closed");
    start_feeder_locked(core, member);
    was_idle = f.pending.empty();
    append_item(f.pending, packed);
  }
  if (was_idle) f.wake.notify_one();
}

QueueCore& open_core(const std::shared_ptr<QueueCore>& core, const char* op) {
  if (core->closed) throw ValueError(std::string("queue.") + op + ": the queue is closed");
  return *core;
}

// --- consumer side ------------------------------------------------------------------------------

void check_ceiling(std::uint64_t size) {
  if (size > max_frame_size())
    throw Error("queue item of " + std::to_string(size) + " bytes exceeds the ceiling of " +
                std::to_string(max_frame_size()) + " bytes (set_max_frame_size)");
}

// Takes the next item of the read-ahead, if any (read_lock held).
std::optional<std::string> take_ahead(QueueControl& c, std::size_t me) {
  std::uint32_t begin = c.ahead_begin.load();
  if (begin >= c.ahead_end.load()) return std::nullopt;
  std::uint32_t n;
  std::memcpy(&n, c.ahead + begin, sizeof n);
  std::string payload(c.ahead + begin + item_prefix, n);
  Member& m = c.members[me];
  c.got_before.store(m.got.load(), std::memory_order_release);
  c.begin_before.store(begin, std::memory_order_release);
  c.reader.store(static_cast<std::uint32_t>(me), std::memory_order_release);
  c.phase.store(reader_taking, std::memory_order_release);
  c.ahead_begin.store(static_cast<std::uint32_t>(begin + item_prefix + n), std::memory_order_release);
  m.got.store(c.got_before.load() + 1, std::memory_order_release);
  c.phase.store(reader_idle, std::memory_order_release);
  check_ceiling(n);
  return payload;
}

struct LargeItem {
  int fd;
  std::uint64_t size;
};

// Receives the next record (read_lock held, the socket readable). Small items go to the
// read-ahead; a large item is taken at once: its memfd is returned.
std::optional<LargeItem> receive_record(QueueCore& core, std::size_t me) {
  QueueControl& c = *core.control;
  Member& m = c.members[me];
  empty_ahead(c);
  std::memset(c.ahead, 0, header_size);
  c.got_before.store(m.got.load(), std::memory_order_release);
  c.reader.store(static_cast<std::uint32_t>(me), std::memory_order_release);
  c.phase.store(reader_receiving, std::memory_order_release);
  iovec iov{c.ahead, record_capacity};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(core.fds->reader, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  int err = errno;
  int fd = -1;
  if (n > 0 && msg.msg_controllen >= CMSG_LEN(sizeof(int))) {
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) std::memcpy(&fd, CMSG_DATA(cm), sizeof fd);
  }
  auto h = received_record(c);
  bool accepted = h && static_cast<std::size_t>(n) == h->size && settle(c, *h);
  std::optional<LargeItem> large;
  if (accepted && (h->items & large_item)) {
    std::uint64_t size;
    std::memcpy(&size, c.ahead + header_size, sizeof size);
    large = LargeItem{fd, size};
    m.got.store(c.got_before.load() + 1, std::memory_order_release);
  } else if (accepted) {
    publish_small_items(c, *h);
  }
  c.phase.store(reader_idle, std::memory_order_release);
  if (!large && fd >= 0) ::close(fd);
  if (n < 0) throw_errno("receiving from the queue failed", err);
  if (n == 0) throw EOFError("the queue's socket was closed");
  if (large && (msg.msg_flags & MSG_CTRUNC))
    throw OSError("queue: a large item arrived without its memfd (out of file descriptors?); it is lost", EMFILE);
  return large;
}

std::string read_large(LargeItem item) {
  MemFd fd(item.fd);
  check_ceiling(item.size);
  std::string payload(item.size, '\0');
  for (std::size_t off = 0; off < payload.size();) {
    ssize_t n = ::pread(fd.get(), payload.data() + off, payload.size() - off, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw_errno("queue: reading a large item from its memfd failed", n < 0 ? errno : EIO);
    off += static_cast<std::size_t>(n);
  }
  return payload;
}

void item_taken(QueueControl& c) {
  if (c.maxsize != 0) c.not_full.notify();
}

[[noreturn]] void throw_consumer_death(QueueControl& c, std::uint32_t seq) {
  c.deaths_reported.store(seq);
  throw ProcessError("JoinableQueue.join: consumer process " + std::to_string(c.death_pid.load()) + " died holding " +
                     std::to_string(c.death_held.load()) +
                     " item(s) it had taken with get() and not marked task_done(); they are written off");
}

}  // namespace

QueueCore::~QueueCore() { stop_feeder(*feeder, !cancelled); }

// --- QueueChannel ------------------------------------------------------------------------------

QueueChannel::QueueChannel(std::size_t maxsize, queue_kind kind)
    : QueueChannel(std::make_shared<QueueCore>(maxsize, kind)) {}

QueueChannel::QueueChannel(std::shared_ptr<QueueCore> core) : core_(std::move(core)) { register_core(core_); }

// [kind, control block, reader, writer, members file]
void QueueChannel::reduce(msgpack::packer<Buffer>& pk, Reduction& r) const {
  const QueueCore& core = *core_;
  pk.pack_array(5);
  pk.pack(static_cast<unsigned>(core.kind));
  reduce_mapping(core.control, pk, r);
  pk.pack(r.add_fd(core.fds->reader));
  pk.pack(r.add_fd(core.fds->writer));
  pk.pack(r.add_fd(core.fds->members));
}

QueueChannel QueueChannel::rebuild(const msgpack::object& o, ReceivedFds& fds, queue_kind expected) {
  auto fields = reduced_fields(o, 5, "queue");
  if (convert<unsigned>(fields[0]) != static_cast<unsigned>(expected))
    throw TypeError("a child's queue argument holds another kind of queue than its parameter");
  auto reader = convert<std::size_t>(fields[2]), writer = convert<std::size_t>(fields[3]),
       members = convert<std::size_t>(fields[4]);
  int members_fd = fds.take(members);
  if (auto known = adopt_alias(members_fd)) return QueueChannel(std::move(known));
  auto control = rebuild_shared_object<QueueControl>(fields[1], fds);
  auto queue_fds = std::make_shared<QueueFds>(fds.take(reader), fds.take(writer), members_fd);
  return QueueChannel(std::make_shared<QueueCore>(std::move(control), std::move(queue_fds), expected));
}

bool QueueChannel::put(std::string_view packed, Deadline deadline) {
  QueueCore& core = open_core(core_, "put");
  std::size_t me = my_member(core);
  Member& m = core.control->members[me];
  if (!reserve(core, m, deadline)) return false;
  try {
    deliver(core, me, packed);
  } catch (...) {
    m.written_off.fetch_add(1);
    item_taken(*core.control);
    throw;
  }
  return true;
}

std::optional<std::string> QueueChannel::get(Deadline deadline) {
  QueueCore& core = open_core(core_, "get");
  QueueControl& c = *core.control;
  std::size_t me = my_member(core);
  if (lock_robust(c.read_lock, deadline) != lock_result::acquired) return std::nullopt;
  std::optional<LargeItem> large;
  {
    Unlock reading{c.read_lock};
    recover_reader(c);
    for (;;) {
      if (auto item = take_ahead(c, me)) {
        item_taken(c);
        return item;
      }
      if (!wait_readable(core.fds->reader, deadline)) {
        clear_voids_if_drained(core);
        return std::nullopt;
      }
      if ((large = receive_record(core, me))) break;
    }
  }
  item_taken(c);
  return read_large(*large);
}

std::size_t QueueChannel::qsize() const {
  reclaim_dead(*core_);
  auto n = items_in_queue(*core_->control);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

bool QueueChannel::empty() const { return qsize() == 0; }

bool QueueChannel::full() const {
  const QueueControl& c = *core_->control;
  return c.maxsize != 0 && static_cast<std::int64_t>(qsize()) >= c.maxsize;
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
  Member& m = c.members[my_member(*core_)];
  std::int64_t unfinished;
  {
    RobustGuard counting(c.done_lock);
    unfinished = unfinished_items(c);
    if (unfinished <= 0) throw ValueError("task_done() called more times than there were items put");
    m.done.fetch_add(1);
  }
  if (unfinished == 1) c.all_done.notify();
}

bool QueueChannel::join(Deadline deadline) {
  QueueCore& core = *core_;
  QueueControl& c = *core.control;
  auto seq = c.death_seq.load();
  for (;;) {
    reclaim_dead(core);
    auto now = c.death_seq.load();
    if (now != seq || now != c.deaths_reported.load()) throw_consumer_death(c, now);
    if (unfinished_items(c) <= 0) return true;
    if (deadline && Clock::now() >= *deadline) return false;
    Deadline slice = Clock::now() + liveness_poll;
    if (deadline && *deadline < *slice) slice = deadline;
    wait_for_claim(
        c.all_done, [&] { return unfinished_items(c) <= 0 || c.death_seq.load() != seq; }, slice);
  }
}

}  // namespace multiproc::detail
