// What both ends of a manager connection share: socket settings and a frame reader.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace multiproc::detail {

// A TCP peer whose host vanished sends no FIN: keepalive probes turn that silence into an error
// within about 16 s, so a proxy call fails (or a server releases the dead client's locks)
// instead of waiting forever. Unix sockets need nothing: the kernel closes them with the process.
inline void keep_alive_if_tcp(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return;
  if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) return;
  int on = 1, idle_s = 10, interval_s = 2, probes = 3;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof interval_s);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

// Reads frames (detail/wire.hpp) from a stream socket with one read() for a small frame instead
// of one for the header and one for the payload: a request or a reply is a syscall cheaper on
// each side. Bytes past a frame (a client that pipelines) stay buffered for the next call. The
// buffer grows with the bytes that actually arrive, never with what a header claims.
class FrameReader {
public:
  // The next frame's payload, valid until the next call. Waits (spin, then block) for it.
  // nullopt on a clean EOF between frames; Error on a truncated or malformed frame.
  std::optional<std::string_view> next(int fd);

private:
  // Reads more bytes (at least one), making room for up to `frame_size`; false at EOF.
  bool fill(int fd, std::size_t frame_size);

  std::string buf_;
  std::size_t start_ = 0;  // the first byte not yet returned
  std::size_t end_ = 0;    // one past the last byte read
};

} // namespace multiproc::detail
