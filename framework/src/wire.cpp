#include "multiproc/detail/wire.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "multiproc/errors.hpp"

namespace multiproc::detail {

namespace {

std::atomic<std::size_t> g_max_frame{std::size_t{64} << 20};
// The spin length, measured with bench/spin_sweep.cpp: 5000 small-message round trips between
// two processes that both spin, on this 2-core machine while other builds kept it busy; the
// median round trip in µs over three rounds, with and without the sched_yield in the spin loop:
//   spin (µs)                      0      5     10     20     50    100    200
//   pinned apart, poll-only      40-47  10-56   8-9    8-10   7-10   8-11   8-10
//   pinned apart, poll + yield   50-54  37-50   8-10   9-11   9-11   8-9    7-9
//   unpinned, poll-only          14-44  21-23  33-35  54-56  114-117 219   419
//   unpinned, poll + yield       12-15  12-16  11-15   9-15  11     11-17  10-15
// Pinned to different CPUs, a receiver that blocks pays a ~45 µs wake-up; a spin of 10 µs or
// more catches the reply, 5 µs does not. Unpinned on the busy machine the scheduler put both on
// one CPU, where a plain spin only delays the peer (a round trip costs two whole spins); the
// yield makes any length harmless there. 50 µs had the steadiest 90th percentile pinned
// (11-13 µs, against up to 36-56 µs at 10-20 µs) and wastes at most 50 µs of CPU per wait.
std::atomic<long> g_spin_us{50};

constexpr std::uint64_t escape_threshold = 0x7fffffff;
// Payloads up to this size are allocated at once; larger ones grow as their bytes arrive.
constexpr std::size_t eager_payload = std::size_t{16} << 20;

[[noreturn]] void throw_os(const char* what, int err) {
  std::string msg = std::string(what) + ": " + std::strerror(err);
  if (err == EPIPE || err == ECONNRESET) throw BrokenPipeError(msg, err);
  throw OSError(msg, err);
}

void put_be32(char* p, std::uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
void put_be64(char* p, std::uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
std::uint64_t get_be(const unsigned char* p, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

constexpr std::size_t max_header = 12;

// Writes the header of a frame of payload_size bytes at out (room for max_header bytes); its length.
std::size_t frame_header(char* out, std::size_t payload_size) {
  if (payload_size > escape_threshold) {
    put_be32(out, 0xffffffffu);
    put_be64(out + 4, payload_size);
    return 12;
  }
  put_be32(out, static_cast<std::uint32_t>(payload_size));
  return 4;
}

// Drops n bytes that were written or read from the front of iov, and the buffers left empty.
void advance(iovec*& iov, int& iovcnt, std::size_t n) {
  while (iovcnt > 0 && n >= iov->iov_len) {
    n -= iov->iov_len;
    ++iov;
    --iovcnt;
  }
  if (iovcnt > 0) {
    iov->iov_base = static_cast<char*>(iov->iov_base) + n;
    iov->iov_len -= n;
  }
}

// One send of the buffers: send() for one (it skips sendmsg's copy of the iovec array from user
// space), MSG_NOSIGNAL either way; writev for an fd that is not a socket.
ssize_t send_once(int fd, iovec* iov, int iovcnt) {
  ssize_t n;
  if (iovcnt == 1) {
    n = ::send(fd, iov->iov_base, iov->iov_len, MSG_NOSIGNAL);
  } else {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(iovcnt);
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  }
  if (n < 0 && errno == ENOTSOCK) n = ::writev(fd, iov, iovcnt);
  return n;
}

// Writes all of the buffers, through partial writes and EINTR.
void write_all(int fd, iovec* iov, int iovcnt) {
  while (iovcnt > 0) {
    ssize_t n = send_once(fd, iov, iovcnt);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_os("write to connection failed", errno);
    }
    advance(iov, iovcnt, static_cast<std::size_t>(n));
  }
}

bool is_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_NONBLOCK) != 0;
}

// Reads until the buffers are full or the peer closes (EINTR retried, ECONNRESET taken as a
// close); how many bytes arrived. iov is consumed.
std::size_t read_all(int fd, iovec* iov, int iovcnt) {
  std::size_t got = 0;
  advance(iov, iovcnt, 0);  // readv into nothing would return 0, which reads as EOF
  while (iovcnt > 0) {
    ssize_t r = ::readv(fd, iov, iovcnt);
    if (r < 0) {
      if (errno == EINTR) continue;
      // The rest of a frame still on its way, on an fd someone made O_NONBLOCK. On a blocking
      // fd EAGAIN is an SO_RCVTIMEO timeout (the handshake's bound on a stalled peer): an error.
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && is_nonblocking(fd)) {
        block_until_readable(fd, std::nullopt);
        continue;
      }
      if (errno == ECONNRESET) return got;
      throw_os("read from connection failed", errno);
    }
    if (r == 0) return got;
    got += static_cast<std::size_t>(r);
    advance(iov, iovcnt, static_cast<std::size_t>(r));
  }
  return got;
}

// Reads up to n bytes; returns how many before EOF (n unless the peer closed).
std::size_t read_some_exact(int fd, char* out, std::size_t n) {
  iovec iov{out, n};
  return read_all(fd, &iov, 1);
}

// Calls ready() until it returns true or the spin (cut short at the deadline) is over; whether
// it did. At least one try, so a zero deadline still checks once.
template <class Ready>
bool spin_until(Deadline deadline, Ready ready) {
  auto spin_end = Clock::now() + spin_duration();
  if (deadline && *deadline < spin_end) spin_end = *deadline;
  for (;;) {
    if (ready()) return true;
    if (Clock::now() >= spin_end) return false;
    // Lets a peer that shares this CPU run: without it, on a busy machine every message waits
    // out the whole spin (bench/: 110 µs round trips instead of 10 µs when both share a CPU).
    ::sched_yield();
  }
}

// What a peek at the socket found.
enum class peeked { bytes, nothing_yet, not_a_socket };

// A non-blocking recv(MSG_PEEK) of up to a long header into h: the bytes there are in *seen (0: EOF).
peeked peek_header(int fd, char* h, std::size_t* seen) {
  for (;;) {
    ssize_t r = ::recv(fd, h, max_header, MSG_PEEK | MSG_DONTWAIT);
    if (r >= 0) {
      *seen = static_cast<std::size_t>(r);
      return peeked::bytes;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return peeked::nothing_yet;
    if (errno == ENOTSOCK) return peeked::not_a_socket;
    if (errno == ECONNRESET) {
      *seen = 0;
      return peeked::bytes;
    }
    throw_os("read from connection failed", errno);
  }
}

// One look, without waiting: whether fd is readable now. A signal just makes the look negative.
bool readable_now(int fd) {
  pollfd p{fd, POLLIN, 0};
  int r = ::poll(&p, 1, 0);
  if (r < 0 && errno != EINTR) throw_os("poll failed", errno);
  return r > 0;
}

// poll()'s timeout for what is left until the deadline: -1 for none, never negative otherwise.
// Rounded up, so that poll never wakes a hair early and reports a timeout that has not passed;
// capped at INT_MAX ms (a later deadline takes more than one poll).
int poll_timeout_ms(Deadline deadline) {
  if (!deadline) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<decltype(left)>(left, 0, INT_MAX));
}

} // namespace

std::size_t max_frame_size() noexcept { return g_max_frame.load(std::memory_order_relaxed); }
void set_max_frame_size(std::size_t bytes) noexcept { g_max_frame.store(bytes, std::memory_order_relaxed); }
std::chrono::microseconds spin_duration() noexcept {
  return std::chrono::microseconds(g_spin_us.load(std::memory_order_relaxed));
}
void set_spin_duration(std::chrono::microseconds us) noexcept {
  g_spin_us.store(static_cast<long>(us.count()), std::memory_order_relaxed);
}

int poll_until(pollfd* fds, std::size_t n, Deadline deadline) {
  for (;;) {
    // A deadline that has passed still gets one look (timeout 0); a look cut short by a signal
    // is taken again.
    int r = ::poll(fds, static_cast<nfds_t>(n), poll_timeout_ms(deadline));
    if (r > 0) return r;
    if (r < 0 && errno != EINTR) throw_os("poll failed", errno);
    if (r == 0 && deadline && Clock::now() >= *deadline) return 0;
  }
}

bool wait_readable(int fd, Deadline deadline) {
  return spin_until(deadline, [fd] { return readable_now(fd); }) || block_until_readable(fd, deadline);
}

bool block_until_readable(int fd, Deadline deadline) {
  pollfd p{fd, POLLIN, 0};
  return poll_until(&p, 1, deadline) > 0;
}

void write_frame(int fd, std::string_view payload) {
  char header[max_header];
  std::size_t header_len = frame_header(header, payload.size());
  iovec iov[2] = {{header, header_len}, {const_cast<char*>(payload.data()), payload.size()}};
  write_all(fd, iov, payload.empty() ? 1 : 2);
}

void write_reserved_frame(int fd, std::string& buf) {
  std::size_t n = buf.size() - frame_reserve;
  if (n > escape_threshold) {
    write_frame(fd, std::string_view(buf).substr(frame_reserve));
    return;
  }
  frame_header(buf.data(), n);
  iovec iov{buf.data(), buf.size()};
  write_all(fd, &iov, 1);
}

void append_frame(std::string& out, std::string_view payload) {
  char header[max_header];
  out.append(header, frame_header(header, payload.size()));
  out.append(payload);
}

void write_bytes(int fd, std::string_view bytes) {
  if (bytes.empty()) return;
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  write_all(fd, &iov, 1);
}

std::optional<FrameHeader> parse_frame_header(std::string_view bytes) {
  if (bytes.size() < 4) return std::nullopt;
  auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  auto len32 = static_cast<std::int32_t>(static_cast<std::uint32_t>(get_be(p, 4)));
  FrameHeader h{4, 0};
  if (len32 == -1) {
    if (bytes.size() < 12) return std::nullopt;
    h = {12, static_cast<std::size_t>(get_be(p + 4, 8))};
  } else if (len32 < 0) {
    throw Error("malformed frame: negative length " + std::to_string(len32));
  } else {
    h.payload_size = static_cast<std::size_t>(len32);
  }
  if (h.payload_size > max_frame_size()) {
    throw Error("frame of " + std::to_string(h.payload_size) + " bytes exceeds the ceiling of " +
                std::to_string(max_frame_size()) + " bytes (raise it with mp::set_max_message_size)");
  }
  return h;
}

std::size_t read_frame_header(int fd) {
  unsigned char h[8];
  std::size_t got = read_some_exact(fd, reinterpret_cast<char*>(h), 4);
  if (got == 0) throw EOFError("the other end of the connection closed");
  if (got < 4) throw Error("truncated frame: the peer closed inside a frame header");
  auto len32 = static_cast<std::int32_t>(static_cast<std::uint32_t>(get_be(h, 4)));
  std::uint64_t len;
  if (len32 == -1) {
    if (read_some_exact(fd, reinterpret_cast<char*>(h), 8) < 8)
      throw Error("truncated frame: the peer closed inside a long frame header");
    len = get_be(h, 8);
  } else if (len32 < 0) {
    throw Error("malformed frame: negative length " + std::to_string(len32));
  } else {
    len = static_cast<std::uint64_t>(len32);
  }
  if (len > max_frame_size()) {
    throw Error("frame of " + std::to_string(len) + " bytes exceeds the ceiling of " +
                std::to_string(max_frame_size()) + " bytes (raise it with mp::set_max_message_size)");
  }
  return static_cast<std::size_t>(len);
}

void read_exact(int fd, char* out, std::size_t n) {
  std::size_t got = read_some_exact(fd, out, n);
  if (got < n)
    throw Error("truncated frame: the peer closed after " + std::to_string(got) + " of " +
                std::to_string(n) + " payload bytes");
}

void discard_exact(int fd, std::size_t n) {
  char scratch[65536];
  while (n > 0) {
    std::size_t chunk = n < sizeof scratch ? n : sizeof scratch;
    read_exact(fd, scratch, chunk);
    n -= chunk;
  }
}

std::string read_payload(int fd, std::size_t n) {
  std::string out;
  out.resize(n < eager_payload ? n : eager_payload);
  read_exact(fd, out.data(), out.size());
  while (out.size() < n) {
    std::size_t have = out.size();
    out.resize(n - have < have ? n : 2 * have);
    read_exact(fd, out.data() + have, out.size() - have);
  }
  return out;
}

PendingFrame wait_frame(int fd) {
  char h[max_header];
  std::size_t seen = 0;
  peeked got = peeked::nothing_yet;
  spin_until(std::nullopt, [&] { return (got = peek_header(fd, h, &seen)) != peeked::nothing_yet; });
  // Blocks in poll(): a blocking recv() would not block on a socket someone made O_NONBLOCK.
  while (got == peeked::nothing_yet) {
    block_until_readable(fd, std::nullopt);
    got = peek_header(fd, h, &seen);
  }
  if (got == peeked::not_a_socket) {
    wait_readable(fd, std::nullopt);
    return {0, read_frame_header(fd)};
  }
  if (seen == 0) throw EOFError("the other end of the connection closed");
  if (auto header = parse_frame_header(std::string_view(h, seen))) return {header->header_size, header->payload_size};
  // Part of a header: the rest may be on its way or never come; a blocking read tells which.
  return {0, read_frame_header(fd)};
}

void read_payload_into(int fd, const PendingFrame& frame, char* out) {
  char header[max_header];
  iovec iov[2] = {{header, frame.header_unread}, {out, frame.payload_size}};
  std::size_t got = read_all(fd, iov, 2);
  std::size_t payload_got = got > frame.header_unread ? got - frame.header_unread : 0;
  if (payload_got < frame.payload_size)
    throw Error("truncated frame: the peer closed after " + std::to_string(payload_got) + " of " +
                std::to_string(frame.payload_size) + " payload bytes");
}

std::string read_payload(int fd, const PendingFrame& frame) {
  if (frame.payload_size > eager_payload) {
    char header[max_header];
    read_exact(fd, header, frame.header_unread);
    return read_payload(fd, frame.payload_size);
  }
  std::string out(frame.payload_size, '\0');
  read_payload_into(fd, frame, out.data());
  return out;
}

void discard_payload(int fd, const PendingFrame& frame) {
  char header[max_header];
  read_exact(fd, header, frame.header_unread);
  discard_exact(fd, frame.payload_size);
}

} // namespace multiproc::detail
