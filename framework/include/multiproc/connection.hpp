// mp::Connection and mp::Pipe — Python's multiprocessing.connection: message channels between
// processes over Unix sockets, plus Listener/Client for named addresses with an authkey.
//
// Messages are MessagePack frames (detail/wire.hpp): send() packs any value msgpack-c packs and
// recv<T>() unpacks it (TypeError when it is not a T). send_bytes/recv_bytes carry raw bytes with
// the same framing as CPython, so Python's Connection can talk to ours. A Connection is a handle:
// copies share one endpoint, and a copy passed to a Process is the same endpoint in the child.
// Concurrent send() calls (or recv() calls) on one endpoint from several threads are serialized;
// several processes reading one endpoint need a lock of their own, as in Python.
// Destructor: the endpoint closes when the last copy in this process goes (or at close()).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "multiproc/detail/codec.hpp"
#include "multiproc/detail/reduction.hpp"
#include "multiproc/detail/wire.hpp"
#include "multiproc/object.hpp"

namespace multiproc {

namespace detail {
struct ConnectionState;
}

class Connection {
public:
  Connection();  // a closed connection
  // Adopts an open stream-socket fd (closed with the last copy).
  explicit Connection(int fd, bool readable = true, bool writable = true);

  // Sends one message. ValueError if closed or read-only; BrokenPipeError if the peer is gone.
  template <class T>
  void send(const T& obj) {
    detail::Buffer buf;
    buf.data.resize(detail::frame_reserve);
    detail::pack_into(buf, obj);
    send_reserved(buf.data);
  }
  // Receives one message; blocks until one arrives. EOFError once the peer closed and all is
  // read; TypeError if the message is not a T (it is consumed); Error on a malformed frame
  // (after a malformed header every further read throws Error: the stream is out of step).
  template <class T = Object>
  T recv() {
    return detail::decode<T>(recv_bytes());
  }

  void send_bytes(std::string_view buf);
  // Sends buf[offset, offset+size); ValueError when the range is outside buf.
  void send_bytes(std::string_view buf, std::size_t offset, std::optional<std::size_t> size = {});
  // One whole message. Longer than maxlength: ValueError, and the message is dropped.
  std::string recv_bytes(std::optional<std::size_t> maxlength = {});
  // Copies one message into buf at offset; returns its size. BufferTooShort (holding the whole
  // message) when it does not fit.
  std::size_t recv_bytes_into(std::span<std::byte> buf, std::size_t offset = 0);

  // Whether a message (or EOF) is ready to read. Zero timeout checks without waiting.
  bool poll();
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) {
    return poll_until(detail::deadline_after(timeout));
  }

  void close();
  bool closed() const;
  bool readable() const;
  bool writable() const;
  int fileno() const;  // ValueError if closed
  friend bool operator==(const Connection& a, const Connection& b) { return a.state_ == b.state_; }

  // Used by the library: blocks until readable or the deadline (nullopt: forever).
  bool poll_until(detail::Deadline deadline);

private:
  void send_reserved(std::string& framed);
  detail::PendingFrame wait_frame(int fd);  // with the read lock held
  int checked_fd(bool for_write) const;
  std::shared_ptr<detail::ConnectionState> state_;
};

// A connected pair. duplex=false: (reader, writer), as Python's Pipe(False).
std::pair<Connection, Connection> Pipe(bool duplex = true);

// The largest message a process accepts (default 64 MiB; CPython has no such limit), on every
// channel: connections, queues, pool tasks and results, manager calls. A longer one is refused
// from its header, before anything is allocated, with mp::Error. It also bounds what decoding
// may allocate: a message may take max(this, 8 x its size) bytes once decoded, so that a small
// message of millions of one-byte values (nil, bool, small ints) cannot take 25-65x its size.
// Process-wide and thread-safe; set it in the receiving process.
inline std::size_t max_message_size() noexcept { return detail::max_frame_size(); }
inline void set_max_message_size(std::size_t bytes) noexcept { detail::set_max_frame_size(bytes); }

namespace detail {
// A Connection crosses into a spawn or forkserver child as its socket and its direction.
template <>
struct reducer<Connection> {
  static void reduce(const Connection& c, msgpack::packer<Buffer>& pk, Reduction& r) {
    pk.pack(std::make_tuple(r.add_fd(c.fileno()), c.readable(), c.writable()));
  }
  static Connection rebuild(const msgpack::object& o, ReceivedFds& fds) {
    auto [index, readable, writable] = convert<std::tuple<std::size_t, bool, bool>>(o);
    return Connection(fds.take(index), readable, writable);
  }
};
} // namespace detail

namespace detail {
// How long a handshake may take (default 10 s) before it gives up with AuthenticationError, so
// a silent or dribbling peer cannot stall a Listener or a Client: the bound of each of
// deliver_challenge/answer_challenge, and of both together in Listener::accept and Client.
// Process-wide.
std::chrono::milliseconds handshake_timeout() noexcept;
void set_handshake_timeout(std::chrono::milliseconds) noexcept;
} // namespace detail

namespace connection {

// Timeout type of the functions below: any std::chrono duration converts to it.
using Timeout = std::optional<std::chrono::duration<double>>;

// The connections that are ready to read (a message or EOF); empty on timeout.
std::vector<Connection> wait(const std::vector<Connection>& conns, Timeout timeout = {});
// The fds (e.g. Process sentinels) that are readable; empty on timeout.
std::vector<int> wait(const std::vector<int>& fds, Timeout timeout = {});

// Python's Listener: accepts connections on a Unix socket path or "host:port". With an authkey
// every accepted connection first passes CPython's HMAC challenge in both directions.
// An address is "host:port" when it has no '/' and ends in ":<digits>" ("127.0.0.1:0",
// "localhost:6000", "[::1]:0"); anything else is a Unix socket path (a leading '\0' makes it
// abstract).
// Not thread-safe; the socket is closed (and a Unix path removed) by close() or the destructor.
class Listener {
public:
  // address "": a fresh Unix socket path in a private temporary directory. "host:0": any port.
  explicit Listener(std::string address = "", std::optional<std::string> authkey = {}, int backlog = 16);
  ~Listener();
  Listener(Listener&&) noexcept;
  Listener& operator=(Listener&&) noexcept;

  // Waits for the next client. With an authkey, the next to pass the handshake: handshakes with
  // several clients run side by side (the ones still under way go on at the next call), so a
  // slow client delays no other. AuthenticationError when a client fails its handshake or runs
  // out of handshake_timeout() (the listener keeps accepting); ValueError when closed.
  Connection accept();
  void close();
  const std::string& address() const;  // the bound address ("host:port" with the real port)
  const std::string& last_accepted() const;
  int fileno() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Python's Client(): connects to a Listener (or a CPython Listener) and, with an authkey,
// answers its challenge and challenges it back. AuthenticationError on a wrong key.
// A Client is-a Connection.
class Client : public Connection {
public:
  explicit Client(const std::string& address, std::optional<std::string> authkey = {});
};

// The HMAC challenge/response of CPython's multiprocessing.connection (3.12's {digest} form,
// and the legacy HMAC-MD5 form of <= 3.11 it falls back to). Throw AuthenticationError, also
// when the peer closes, sends garbage or stays silent past handshake_timeout().
void deliver_challenge(Connection& conn, std::string_view authkey);
void answer_challenge(Connection& conn, std::string_view authkey);

} // namespace connection
} // namespace multiproc
