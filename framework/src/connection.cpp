#include "multiproc/connection.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "multiproc/errors.hpp"

namespace multiproc {

namespace detail {
struct ConnectionState {
  int fd = -1;
  bool readable = false;
  bool writable = false;
  // A malformed frame header leaves the stream out of step: what follows would be read as
  // headers of made-up lengths (and could block forever), so further reads are refused.
  bool out_of_step = false;
  std::mutex read_m, write_m;  // one frame at a time per direction within this process
  ~ConnectionState() {
    if (fd >= 0) ::close(fd);
  }
};
} // namespace detail

Connection::Connection() = default;

Connection::Connection(int fd, bool readable, bool writable)
    : state_(std::make_shared<detail::ConnectionState>()) {
  if (fd < 0) throw ValueError("invalid file descriptor for a Connection");
  if (!readable && !writable) throw ValueError("a Connection must be readable, writable or both");
  state_->fd = fd;
  state_->readable = readable;
  state_->writable = writable;
}

int Connection::checked_fd(bool for_write) const {
  if (!state_ || state_->fd < 0) throw ValueError("connection is closed");
  if (for_write && !state_->writable) throw ValueError("connection is read-only");
  if (!for_write && !state_->readable) throw ValueError("connection is write-only");
  return state_->fd;
}

void Connection::send_reserved(std::string& framed) {
  int fd = checked_fd(true);
  std::lock_guard lock(state_->write_m);
  detail::write_reserved_frame(fd, framed);
}

void Connection::send_bytes(std::string_view buf) {
  int fd = checked_fd(true);
  std::lock_guard lock(state_->write_m);
  detail::write_frame(fd, buf);
}

void Connection::send_bytes(std::string_view buf, std::size_t offset, std::optional<std::size_t> size) {
  if (offset > buf.size()) throw ValueError("offset is out of bounds");
  std::size_t n = size.value_or(buf.size() - offset);
  if (n > buf.size() - offset) throw ValueError("buffer length < offset + size");
  send_bytes(buf.substr(offset, n));
}

detail::PendingFrame Connection::wait_frame(int fd) {
  if (state_->out_of_step)
    throw Error("connection is unusable: an earlier message had a malformed frame header");
  try {
    return detail::wait_frame(fd);
  } catch (const EOFError&) {
    throw;
  } catch (const Error&) {
    state_->out_of_step = true;
    throw;
  }
}

std::string Connection::recv_bytes(std::optional<std::size_t> maxlength) {
  int fd = checked_fd(false);
  std::lock_guard lock(state_->read_m);
  detail::PendingFrame frame = wait_frame(fd);
  if (maxlength && frame.payload_size > *maxlength) {
    detail::discard_payload(fd, frame);
    throw ValueError("message of " + std::to_string(frame.payload_size) + " bytes is longer than maxlength " +
                     std::to_string(*maxlength));
  }
  return detail::read_payload(fd, frame);
}

std::size_t Connection::recv_bytes_into(std::span<std::byte> buf, std::size_t offset) {
  if (offset > buf.size()) throw ValueError("offset is out of bounds");
  int fd = checked_fd(false);
  std::lock_guard lock(state_->read_m);
  detail::PendingFrame frame = wait_frame(fd);
  if (frame.payload_size > buf.size() - offset) {
    std::string whole = detail::read_payload(fd, frame);
    throw BufferTooShort("message of " + std::to_string(frame.payload_size) + " bytes does not fit in " +
                             std::to_string(buf.size() - offset) + " bytes",
                         std::move(whole));
  }
  detail::read_payload_into(fd, frame, reinterpret_cast<char*>(buf.data() + offset));
  return frame.payload_size;
}

bool Connection::poll() { return poll_until(detail::Clock::now()); }

bool Connection::poll_until(detail::Deadline deadline) {
  return detail::wait_readable(checked_fd(false), deadline);
}

void Connection::close() {
  if (!state_ || state_->fd < 0) return;
  ::close(state_->fd);
  state_->fd = -1;
}

bool Connection::closed() const { return !state_ || state_->fd < 0; }
bool Connection::readable() const { return state_ && state_->readable; }
bool Connection::writable() const { return state_ && state_->writable; }
int Connection::fileno() const {
  if (closed()) throw ValueError("connection is closed");
  return state_->fd;
}

std::pair<Connection, Connection> Pipe(bool duplex) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw OSError(std::string("socketpair failed: ") + std::strerror(errno), errno);
  if (duplex) return {Connection(sv[0]), Connection(sv[1])};
  ::shutdown(sv[0], SHUT_WR);
  ::shutdown(sv[1], SHUT_RD);
  return {Connection(sv[0], true, false), Connection(sv[1], false, true)};
}

namespace connection {

namespace {
// Polls fds until one is readable (or hung up) or the timeout passes; the indices ready.
std::vector<std::size_t> poll_fds(const std::vector<int>& fds, const Timeout& timeout) {
  std::vector<pollfd> pfds;
  pfds.reserve(fds.size());
  for (int fd : fds) pfds.push_back({fd, POLLIN, 0});
  detail::Deadline deadline;
  if (timeout) deadline = detail::deadline_after(*timeout);
  detail::poll_until(pfds.data(), pfds.size(), deadline);
  std::vector<std::size_t> ready;
  for (std::size_t i = 0; i < pfds.size(); ++i)
    if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) ready.push_back(i);
  return ready;
}
} // namespace

std::vector<Connection> wait(const std::vector<Connection>& conns, Timeout timeout) {
  std::vector<int> fds;
  for (const auto& c : conns) fds.push_back(c.fileno());
  std::vector<Connection> out;
  for (auto i : poll_fds(fds, timeout)) out.push_back(conns[i]);
  return out;
}

std::vector<int> wait(const std::vector<int>& fds, Timeout timeout) {
  std::vector<int> out;
  for (auto i : poll_fds(fds, timeout)) out.push_back(fds[i]);
  return out;
}

} // namespace connection
} // namespace multiproc
