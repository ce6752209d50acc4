// Queues between processes — Python's multiprocessing Queue, JoinableQueue and SimpleQueue.
//
// A queue is a mailbox over a Unix SOCK_SEQPACKET socket: items travel in records (a batch of
// small items, or one large item in a memfd) that the kernel delivers whole or not at all, and a
// small control block in shared memory holds what every process must agree on: a slot
// per process using the queue with its counts (items put, sent, taken, task_done), so that
// qsize and maxsize hold across processes, and a read-ahead buffer with the rest of the last
// record (items in it still belong to the queue: any consumer takes them next).
// A handle is a cheap copy; a copy passed to a Process (under any start method: a spawn or
// forkserver child receives its four descriptors), or inherited by any forked child, is the same
// queue there. Every method is safe from any thread of any process.
//
// put() packs the item at the call site (an unpackable type does not compile; a packing error
// throws there) and, for Queue, hands it to this process's feeder thread, which sends pending
// items in batches: an unbounded put never blocks. Nothing put is lost: items put before
// close() + join_thread(), or before the process ends normally, are delivered, in order per
// producer (cancel_join_thread() gives that up to exit without waiting, as in Python). A forked
// child never re-sends its parent's pending items. get(timeout) never swallows an item.
// SimpleQueue has no feeder: put sends directly.
// A process killed at any instant (SIGKILL included) loses at most the items it was putting (not
// yet sent by its feeder) or getting; every other item arrives intact and in per-producer order,
// and the dead process's unsent items give back their qsize()/maxsize slots. qsize(), empty()
// and full() are exact once the queue is quiet; they look for dead processes (one fcntl per
// process using the queue). At most 1024 processes may use one queue at once.
// Timeouts: without one a call blocks; with one it waits at most that long (zero: only tries)
// and throws Empty / Full. After close(), put and get throw ValueError in this process.
// Destructor: when the last handle in a process goes, its pending items are flushed (unless
// cancel_join_thread() was called) and its descriptors closed; the queue lives on in others.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/reduction.hpp"
#include "multiproc/detail/wire.hpp"
#include "multiproc/errors.hpp"
#include "multiproc/object.hpp"

namespace multiproc {

namespace detail {

enum class queue_kind : unsigned char { queue, joinable, simple };
struct QueueCore;

// The untyped queue behind Queue<T>, JoinableQueue<T> and SimpleQueue<T>: packed items in,
// packed items out.
class QueueChannel {
public:
  QueueChannel(std::size_t maxsize, queue_kind kind);
  // false when the queue stayed full until the deadline.
  bool put(std::string_view packed, Deadline deadline);
  // nullopt when nothing arrived by the deadline.
  std::optional<std::string> get(Deadline deadline);
  std::size_t qsize() const;
  bool empty() const;
  bool full() const;
  void close();
  void join_thread();
  void cancel_join_thread();
  void task_done();
  bool join(Deadline deadline);

  // The queue's descriptors and kind, for a spawn or forkserver child; rebuild gives the same
  // queue there (TypeError when the message holds another kind of queue).
  void reduce(msgpack::packer<Buffer>& pk, Reduction& r) const;
  static QueueChannel rebuild(const msgpack::object& o, ReceivedFds& fds, queue_kind expected);

private:
  explicit QueueChannel(std::shared_ptr<QueueCore> core);
  std::shared_ptr<QueueCore> core_;
};

// The one reducer of Queue, JoinableQueue and SimpleQueue: their channel.
template <class Q>
struct queue_reducer {
  static void reduce(const Q& q, msgpack::packer<Buffer>& pk, Reduction& r) { q.channel_.reduce(pk, r); }
  static Q rebuild(const msgpack::object& o, ReceivedFds& fds) {
    return Q(QueueChannel::rebuild(o, fds, Q::kind));
  }
};

// Packs value into a per-thread scratch buffer, reused so that small puts do not allocate.
template <class T>
std::string_view pack_scratch(const T& value) {
  static thread_local Buffer scratch;
  constexpr std::size_t keep_at_most = std::size_t{1} << 20;
  if (scratch.data.capacity() > keep_at_most) scratch.data = std::string();
  scratch.data.clear();
  pack_into(scratch, value);
  return scratch.data;
}

}  // namespace detail

template <class T>
class Queue {
public:
  // maxsize 0: unbounded.
  explicit Queue(std::size_t maxsize = 0) : Queue(maxsize, detail::queue_kind::queue) {}

  // Blocks while the queue is full.
  void put(const T& item) { put_until(item, std::nullopt); }
  // Full when the queue stays full for timeout.
  template <class Rep, class Period>
  void put(const T& item, std::chrono::duration<Rep, Period> timeout) {
    put_until(item, detail::deadline_after(timeout));
  }
  void put_nowait(const T& item) { put_until(item, detail::Clock::now()); }

  // Blocks until an item arrives. TypeError if it does not decode as a T (it is consumed).
  T get() { return *get_until(std::nullopt); }
  // Empty when nothing arrives within timeout.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    auto item = get_until(detail::deadline_after(timeout));
    if (!item) throw Empty("queue.get: no item arrived before the timeout");
    return std::move(*item);
  }
  T get_nowait() {
    auto item = try_get();
    if (!item) throw Empty("queue.get_nowait: the queue is empty");
    return std::move(*item);
  }
  // The next item if one is there now.
  std::optional<T> try_get() { return get_until(detail::Clock::now()); }

  std::size_t qsize() const { return channel_.qsize(); }
  bool empty() const { return channel_.empty(); }
  bool full() const { return channel_.full(); }

  // No more puts from this process; the feeder exits once it has written what is pending.
  void close() { channel_.close(); }
  // Waits until the feeder has written everything this process put. ValueError before close().
  void join_thread() { channel_.join_thread(); }
  // This process will not wait for its pending items at exit (they may be lost).
  void cancel_join_thread() { channel_.cancel_join_thread(); }

protected:
  template <class>
  friend struct detail::queue_reducer;
  static constexpr auto kind = detail::queue_kind::queue;
  Queue(std::size_t maxsize, detail::queue_kind kind) : channel_(maxsize, kind) {}
  explicit Queue(detail::QueueChannel channel) : channel_(std::move(channel)) {}

  void put_until(const T& item, detail::Deadline deadline) {
    if (!channel_.put(detail::pack_scratch(item), deadline)) throw Full("queue.put: the queue is full");
  }
  std::optional<T> get_until(detail::Deadline deadline) {
    auto packed = channel_.get(deadline);
    if (!packed) return std::nullopt;
    return detail::decode<T>(*packed);
  }

  detail::QueueChannel channel_;
};

template <class T>
class JoinableQueue : public Queue<T> {
public:
  explicit JoinableQueue(std::size_t maxsize = 0) : Queue<T>(maxsize, detail::queue_kind::joinable) {}

  // Marks one item taken by get() as processed. ValueError when called more times than items
  // were put.
  void task_done() { this->channel_.task_done(); }
  // Blocks until every item put (by any process) has been marked done. ProcessError, naming its
  // pid and how many items it held, when a consumer died between get() and task_done(): its
  // items are written off (a later join() waits only for the others), and the error is raised
  // by every join() waiting then, or else by the next one.
  void join() { this->channel_.join(std::nullopt); }
  // As join(), at most timeout; true when every item was done.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->channel_.join(detail::deadline_after(timeout));
  }

private:
  template <class>
  friend struct detail::queue_reducer;
  static constexpr auto kind = detail::queue_kind::joinable;
  explicit JoinableQueue(detail::QueueChannel channel) : Queue<T>(std::move(channel)) {}
};

template <class T>
class SimpleQueue {
public:
  SimpleQueue() : channel_(0, detail::queue_kind::simple) {}
  // Writes the item at once (blocks only while the socket is full).
  void put(const T& item) { channel_.put(detail::pack_scratch(item), std::nullopt); }
  T get() { return detail::decode<T>(*channel_.get(std::nullopt)); }
  bool empty() const { return channel_.empty(); }
  void close() { channel_.close(); }

private:
  template <class>
  friend struct detail::queue_reducer;
  static constexpr auto kind = detail::queue_kind::simple;
  explicit SimpleQueue(detail::QueueChannel channel) : channel_(std::move(channel)) {}
  detail::QueueChannel channel_;
};

namespace detail {
template <class T>
struct reducer<Queue<T>> : queue_reducer<Queue<T>> {};
template <class T>
struct reducer<JoinableQueue<T>> : queue_reducer<JoinableQueue<T>> {};
template <class T>
struct reducer<SimpleQueue<T>> : queue_reducer<SimpleQueue<T>> {};
}  // namespace detail

}  // namespace multiproc
